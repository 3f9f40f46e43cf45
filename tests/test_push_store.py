"""The push outbox in the store: a job finished with its answer is claimed, so it can never be
finished (or its answer recorded, or its sends added) twice; answers are purged with the jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.store.protocols import IdempotencyConflict
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_ROUTE, PUSH_SEND, NewPushSubscription, PushAttempt
from diagnoxix.store.retention import FINISHED_TIMERS_KEPT, purge_bookkeeping
from diagnoxix.store.sqlite.store import SqliteStore
from diagnoxix.store.timer_records import NewTimer

P256DH = "B" + "A" * 86
AUTH = "A" * 22


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "push.sqlite3", synchronous="NORMAL", clock=clock)
    await opened.open()
    yield opened
    await opened.close()


def _subscription(user: str, n: int) -> NewPushSubscription:
    return NewPushSubscription(
        user, f"https://fcm.googleapis.com/fcm/send/{n}", P256DH, AUTH, "fcm.googleapis.com"
    )


async def test_a_routing_job_adds_its_sends_once(store: SqliteStore, clock: ManualClock) -> None:
    (job,) = await store.add_timers(
        [NewTimer(PUSH_ROUTE, PUSH_OWNER, clock.now(), {"notification_ids": ["n1"]})]
    )
    send = NewTimer(PUSH_SEND, PUSH_OWNER, clock.now(), {"notification_id": "n1", "subscription_id": "s1"})
    await store.route_push(job.id, [send])
    with pytest.raises(IdempotencyConflict):
        await store.route_push(job.id, [send])
    due = await store.due_timers(limit=10)
    assert [t.kind for t in due] == [PUSH_SEND]  # the routing job is done; one send, not two


async def test_a_send_job_is_finished_with_its_answer_once(store: SqliteStore, clock: ManualClock) -> None:
    sub = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    (job,) = await store.add_timers(
        [NewTimer(PUSH_SEND, PUSH_OWNER, clock.now(), {"notification_id": "n1", "subscription_id": sub.id})]
    )
    attempt = PushAttempt("n1", sub.id, sub.host, 201, "sent")
    await store.finish_push(job.id, attempt)
    with pytest.raises(IdempotencyConflict):
        await store.finish_push(job.id, attempt)
    assert await store.due_timers(limit=10) == []
    assert [(a.status, a.outcome) for a in (await store.push_attempts(["n1"]))["n1"]] == [(201, "sent")]
    (listed,) = await store.list_push_subscriptions("ana")
    assert listed.last_status == 201


async def test_an_endpoint_registered_by_another_user_moves_to_them(store: SqliteStore) -> None:
    first = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    moved = await store.add_push_subscription(_subscription("ben", 1), limit=5)
    assert moved.user_id == "ben"
    assert moved.id != first.id
    assert await store.list_push_subscriptions("ana") == []
    assert sorted(await store.push_subscribed_users()) == ["ben"]


async def test_answers_are_purged_with_the_finished_jobs(store: SqliteStore, clock: ManualClock) -> None:
    sub = await store.add_push_subscription(_subscription("ana", 1), limit=5)
    (job,) = await store.add_timers(
        [NewTimer(PUSH_SEND, PUSH_OWNER, clock.now(), {"notification_id": "n1", "subscription_id": sub.id})]
    )
    await store.retry_push(job.id, PushAttempt("n1", sub.id, sub.host, 503, "retry"), clock.now())
    clock.advance(FINISHED_TIMERS_KEPT.total_seconds() - 60)
    assert (await purge_bookkeeping(store)).push_attempts == 0
    clock.advance(timedelta(minutes=2).total_seconds())
    assert (await purge_bookkeeping(store)).push_attempts == 1
    assert await store.push_attempts(["n1"]) == {}
