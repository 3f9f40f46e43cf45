"""The push outbox in the store, on SQLite and PostgreSQL (`store_backends.store`): a job finished
with its answer is claimed, so it can never be finished (or its answer recorded, or its sends
added) twice; subscriptions move between users and keep to a limit; answers are purged with the
jobs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.store.protocols import IdempotencyConflict
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_ROUTE, PUSH_SEND, NewPushSubscription, PushAttempt
from diagnoxix.store.retention import FINISHED_TIMERS_KEPT
from diagnoxix.store.timer_records import NewTimer

P256DH = "B" + "A" * 86
AUTH = "A" * 22


def _subscription(user: str, n: int, agent: str | None = None) -> NewPushSubscription:
    return NewPushSubscription(
        user, f"https://fcm.googleapis.com/fcm/send/{n}", P256DH, AUTH, "fcm.googleapis.com", agent
    )


def _send(clock: ManualClock, nid: str, sid: str) -> NewTimer:
    return NewTimer(PUSH_SEND, PUSH_OWNER, clock.now(), {"notification_id": nid, "subscription_id": sid})


async def test_a_routing_job_adds_its_sends_once(store: Any, store_clock: ManualClock) -> None:
    (job,) = await store.add_timers(
        [NewTimer(PUSH_ROUTE, PUSH_OWNER, store_clock.now(), {"notification_ids": ["n1"]})]
    )
    send = _send(store_clock, "n1", "s1")
    await store.route_push(job.id, [send])
    with pytest.raises(IdempotencyConflict):
        await store.route_push(job.id, [send])
    due = await store.due_timers(limit=10)
    assert [t.kind for t in due] == [PUSH_SEND]  # the routing job is done; one send, not two
    (routed,) = await store.get_timers(PUSH_OWNER, [job.id])
    assert routed.state == "done"
    assert routed.result == (due[0].id,)


async def test_a_send_job_is_finished_with_its_answer_once(store: Any, store_clock: ManualClock) -> None:
    sub = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    (job,) = await store.add_timers([_send(store_clock, "n1", sub.id)])
    attempt = PushAttempt("n1", sub.id, sub.host, 201, "sent", topic="diagnoxix-normal")
    await store.finish_push(job.id, attempt)
    with pytest.raises(IdempotencyConflict):
        await store.finish_push(job.id, attempt)
    assert await store.due_timers(limit=10) == []
    (answer,) = (await store.push_attempts(["n1"]))["n1"]
    assert (answer.status, answer.outcome, answer.topic, answer.at) == (
        201,
        "sent",
        "diagnoxix-normal",
        store_clock.now().replace(microsecond=store_clock.now().microsecond // 1000 * 1000),
    )
    (listed,) = await store.list_push_subscriptions("ana")
    assert listed.last_status == 201
    assert listed.last_sent_at == answer.at


async def test_a_gone_subscription_is_removed_with_the_answer(store: Any, store_clock: ManualClock) -> None:
    sub = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    (job,) = await store.add_timers([_send(store_clock, "n1", sub.id)])
    await store.finish_push(
        job.id, PushAttempt("n1", sub.id, sub.host, 410, "gone"), remove_subscription=True
    )
    assert await store.get_push_subscription(sub.id) is None
    assert await store.push_subscribed_users() == []
    assert [a.outcome for a in (await store.push_attempts(["n1"]))["n1"]] == ["gone"]
    (other,) = await store.add_timers([_send(store_clock, "n2", sub.id)])
    await store.finish_push(other.id, None)  # nothing was sent: no answer recorded
    assert "n2" not in await store.push_attempts(["n2"])


async def test_a_retried_push_keeps_each_answer_and_gives_up_at_last(
    store: Any, store_clock: ManualClock
) -> None:
    sub = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    (job,) = await store.add_timers([_send(store_clock, "n1", sub.id)])
    later = store_clock.now() + timedelta(seconds=30)
    await store.retry_push(job.id, PushAttempt("n1", sub.id, sub.host, 503, "retry"), later)
    (retried,) = await store.get_timers(PUSH_OWNER, [job.id])
    assert (retried.state, retried.attempts, retried.due_at) == (
        "pending",
        1,
        later.replace(microsecond=later.microsecond // 1000 * 1000),
    )
    await store.retry_push(job.id, PushAttempt("n1", sub.id, sub.host, 0, "failed"), None)
    (failed,) = await store.get_timers(PUSH_OWNER, [job.id])
    assert (failed.state, failed.attempts) == ("failed", 2)
    assert [(a.status, a.outcome) for a in (await store.push_attempts(["n1"]))["n1"]] == [
        (503, "retry"),
        (0, "failed"),
    ]
    (listed,) = await store.list_push_subscriptions("ana")
    assert listed.last_status == 0


async def test_a_leased_send_is_due_again_only_when_its_lease_ends(
    store: Any, store_clock: ManualClock
) -> None:
    (job,) = await store.add_timers([_send(store_clock, "n1", "s1")])
    (due,) = await store.due_timers(limit=10)
    await store.lease_push(due.id, store_clock.now() + timedelta(seconds=30))
    store_clock.advance(29)
    assert await store.due_timers(limit=10) == []
    store_clock.advance(1)
    assert [t.id for t in await store.due_timers(limit=10)] == [job.id]


async def test_queued_push_jobs_are_heard_of_once_committed(store: Any, store_clock: ManualClock) -> None:
    heard: list[int] = []
    jobs = [
        NewTimer(PUSH_ROUTE, PUSH_OWNER, store_clock.now(), {"notification_ids": [f"n{i}"]}) for i in range(3)
    ]
    store.queue_push_jobs(jobs, heard.append)
    await store.flush()
    assert heard == [3]
    due = await store.due_timers(limit=10)
    assert sorted(t.payload["notification_ids"][0] for t in due) == ["n0", "n1", "n2"]


async def test_an_endpoint_registered_by_another_user_moves_to_them(store: Any) -> None:
    first = await store.add_push_subscription(_subscription("ana", 1, "Firefox"), limit=5)
    renewed = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    assert (renewed.id, renewed.created_at, renewed.user_agent) == (first.id, first.created_at, "Firefox")
    moved = await store.add_push_subscription(_subscription("ben", 1), limit=5)
    assert moved.user_id == "ben"
    assert moved.id != first.id
    assert await store.list_push_subscriptions("ana") == []
    assert sorted(await store.push_subscribed_users()) == ["ben"]
    assert not await store.delete_push_subscription("ana", moved.id)  # not hers any more
    assert await store.delete_push_subscription("ben", moved.id)
    assert await store.push_subscribed_users() == []


async def test_a_user_keeps_their_newest_subscriptions_up_to_the_limit(
    store: Any, store_clock: ManualClock
) -> None:
    made = []
    for n in range(4):
        store_clock.advance(1)
        made.append(await store.add_push_subscription(_subscription("ana", n), limit=3))
    await store.add_push_subscription(_subscription("ben", 9), limit=3)
    listed = await store.list_push_subscriptions("ana")
    assert [s.id for s in listed] == [made[3].id, made[2].id, made[1].id]  # newest first
    by_user = await store.push_subscriptions_of(["ana", "ben", "cy"])
    assert sorted(by_user) == ["ana", "ben"]
    assert [s.id for s in by_user["ana"]] == [s.id for s in listed]
    assert await store.get_push_subscription(made[0].id) is None


async def test_answers_are_purged_with_the_finished_jobs(store: Any, store_clock: ManualClock) -> None:
    sub = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    (job,) = await store.add_timers([_send(store_clock, "n1", sub.id)])
    await store.retry_push(job.id, PushAttempt("n1", sub.id, sub.host, 503, "retry"), store_clock.now())
    store_clock.advance(FINISHED_TIMERS_KEPT.total_seconds() - 60)
    assert await store.purge_push_attempts(FINISHED_TIMERS_KEPT) == 0
    store_clock.advance(timedelta(minutes=2).total_seconds())
    assert await store.purge_push_attempts(FINISHED_TIMERS_KEPT) == 1
    assert await store.purge_push_attempts(FINISHED_TIMERS_KEPT) == 0
    assert await store.push_attempts(["n1"]) == {}


async def test_sends_added_together_are_finished_each_once(store: Any, store_clock: ManualClock) -> None:
    (job,) = await store.add_timers(
        [NewTimer(PUSH_ROUTE, PUSH_OWNER, store_clock.now(), {"notification_ids": ["n1"]})]
    )
    await store.route_push(job.id, [_send(store_clock, "n1", f"s{i}") for i in range(10)])
    sends = await store.due_timers(limit=20)
    assert len(sends) == 10
    results = await asyncio.gather(
        *(store.finish_push(t.id, None) for t in sends for _ in range(2)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 10
    assert all(isinstance(r, IdempotencyConflict) for r in results if r is not None)
