"""The store contract, webhooks and digests: endpoints, the deliveries' outbox with the rules'
cursor and a job's claim, failed attempts, dead letters and their revival, the deliveries of a
notification, and digests' joins, on SQLite and PostgreSQL (`store_backends.store`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.models import BROADCAST_RECIPIENT, NotificationDraft
from diagnoxix.store.protocols import IdempotencyConflict, timer_claim
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_SEND
from diagnoxix.store.timer_records import NewTimer
from diagnoxix.store.webhook_records import WEBHOOK_DELIVERY, WEBHOOKS_OWNER

DIGEST_OWNER = "system:digest"
DIGEST = "webhook_digest"
ALL_SEQS = 2**62


def _ms(moment: datetime) -> datetime:
    """As the store keeps it: milliseconds."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _delivery(clock: ManualClock, endpoint: str = "e1", notification_id: str | None = None) -> NewTimer:
    payload: dict[str, Any] = {"endpoint": endpoint, "event": "test.event", "content": {"body": '{"n":1}'}}
    if notification_id is not None:
        payload["notification_id"] = notification_id
    return NewTimer(WEBHOOK_DELIVERY, WEBHOOKS_OWNER, clock.now(), payload)


def _join(clock: ManualClock, nid: str, user: str = "ana", window: float = 300) -> NewTimer:
    payload = {"user_id": user, "type": "lab", "notification_ids": [nid]}
    return NewTimer(
        DIGEST, DIGEST_OWNER, clock.now() + timedelta(seconds=window), payload, f'["{user}", "lab"]'
    )


def _draft(user: str, title: str, ttl: int | None = None) -> NotificationDraft:
    return NotificationDraft(user_id=user, type="custom", title=title, message="", data={}, ttl_seconds=ttl)


async def test_endpoints_are_created_listed_switched_and_removed(
    store: Any, store_clock: ManualClock
) -> None:
    first = await store.create_webhook_endpoint(
        "https://sms.example/hooks", "whsec_one", ["notification.created"], "SMS", "staff:alice"
    )
    store_clock.advance(1)
    second = await store.create_webhook_endpoint("https://mail.example/", "whsec_two", [], "", "")
    assert [e.id for e in await store.webhook_endpoints()] == [first.id, second.id]
    assert (first.events, first.enabled, first.created_by) == (("notification.created",), True, "staff:alice")
    assert await store.set_webhook_endpoint_enabled(first.id, False)
    assert not await store.set_webhook_endpoint_enabled("nope", False)
    listed = await store.webhook_endpoints()
    assert [e.enabled for e in listed] == [False, True]
    assert listed[0].created_at == _ms(first.created_at)
    assert await store.delete_webhook_endpoint(second.id)
    assert not await store.delete_webhook_endpoint(second.id)
    assert [e.id for e in await store.webhook_endpoints()] == [first.id]


async def test_deliveries_and_the_rules_cursor_commit_together_and_the_cursor_only_moves_up(
    store: Any, store_clock: ManualClock
) -> None:
    assert await store.webhook_rules_cursor() is None
    assert await store.enqueue_webhooks([]) == []
    ids = await store.enqueue_webhooks([_delivery(store_clock), _delivery(store_clock, "e2")], through_seq=7)
    jobs = await store.get_timers(WEBHOOKS_OWNER, ids)
    assert [j.payload["endpoint"] for j in jobs] == ["e1", "e2"]
    assert {j.state for j in jobs} == {"pending"}
    assert await store.webhook_rules_cursor() == 7
    await store.enqueue_webhooks([], through_seq=5)  # a late, lower note never moves it back
    store.note_webhook_rules_through(3)
    await store.flush()
    assert await store.webhook_rules_cursor() == 7
    store.note_webhook_rules_through(12)
    await store.flush()
    assert await store.webhook_rules_cursor() == 12


async def test_a_job_that_enqueues_is_done_with_its_deliveries_once(
    store: Any, store_clock: ManualClock
) -> None:
    (check,) = await store.add_timers(
        [NewTimer("webhook_check", WEBHOOKS_OWNER, store_clock.now(), {"content": {"x": 1}, "seq": 4})]
    )
    ids = await store.enqueue_webhooks([_delivery(store_clock)], claim_timer=check.id)
    with pytest.raises(IdempotencyConflict):
        await store.enqueue_webhooks([_delivery(store_clock)], claim_timer=check.id, through_seq=9)
    (done,) = await store.get_timers(WEBHOOKS_OWNER, [check.id])
    assert (done.state, done.payload) == ("done", {"seq": 4})
    assert await store.webhook_rules_cursor() is None  # the refused enqueue moved nothing
    due = await store.due_timers(limit=10)
    assert [j.id for j in due] == ids


async def test_a_failed_attempt_keeps_its_error_and_a_dead_letter_can_be_revived_once(
    store: Any, store_clock: ManualClock
) -> None:
    (wid,) = await store.enqueue_webhooks([_delivery(store_clock)])
    later = store_clock.now() + timedelta(seconds=10)
    await store.webhook_attempt_failed(wid, later, "HTTP 503")
    (job,) = await store.get_timers(WEBHOOKS_OWNER, [wid])
    assert (job.state, job.attempts, job.due_at) == ("pending", 1, _ms(later))
    assert job.payload["last_error"] == "HTTP 503"
    assert job.payload["last_attempt_at"] == job.payload["last_attempt_at"][:23] + "Z"
    assert job.payload["content"] == {"body": '{"n":1}'}
    assert await store.count_dead_webhooks() == 0
    store_clock.advance(10)
    await store.webhook_attempt_failed(wid, None, "timeout")
    (dead,) = await store.dead_webhooks(limit=10)
    assert (dead.id, dead.state, dead.attempts, dead.payload["last_error"]) == (wid, "failed", 2, "timeout")
    assert dead.payload["content"] == {"body": '{"n":1}'}, "a dead letter keeps its body for a retry"
    assert dead.finished_at == _ms(store_clock.now())
    assert await store.count_dead_webhooks() == 1

    store_clock.advance(60)
    assert await store.revive_dead_webhook(wid, "staff:alice")
    assert not await store.revive_dead_webhook(wid, "staff:alice")  # no longer a dead letter
    (revived,) = await store.get_timers(WEBHOOKS_OWNER, [wid])
    assert (revived.state, revived.attempts, revived.finished_at) == ("pending", 0, None)
    assert revived.due_at == _ms(store_clock.now())
    assert revived.payload["revived_by"] == "staff:alice"
    assert revived.payload["since"] == revived.payload["last_attempt_at"][:0] + revived.payload["since"]
    assert revived.payload["content"] == {"body": '{"n":1}'}
    assert await store.count_dead_webhooks() == 0
    assert [j.id for j in await store.due_timers(limit=10)] == [wid]


async def test_dead_letters_come_newest_first_and_one_without_its_body_stays_dead(
    store: Any, store_clock: ManualClock
) -> None:
    ids = await store.enqueue_webhooks([_delivery(store_clock) for _ in range(3)])
    for wid in ids:
        store_clock.advance(1)
        await store.webhook_attempt_failed(wid, None, "HTTP 400")
    assert [j.id for j in await store.dead_webhooks(limit=2)] == [ids[2], ids[1]]
    (other,) = await store.enqueue_webhooks([_delivery(store_clock)])
    await store.retry_timer(other, None)  # failed by the timers: its body is gone
    assert await store.count_dead_webhooks() == 4
    assert not await store.revive_dead_webhook(other, "staff:alice")
    assert not await store.revive_dead_webhook("nope", "staff:alice")


async def test_the_deliveries_of_a_notification_are_found_in_any_state(
    store: Any, store_clock: ManualClock
) -> None:
    first, other = await store.enqueue_webhooks(
        [_delivery(store_clock, "e1", "n1"), _delivery(store_clock, "e1", "n2")]
    )
    store_clock.advance(1)
    (second,) = await store.enqueue_webhooks([_delivery(store_clock, "e2", "n1")])
    await store.enqueue_webhooks([_delivery(store_clock)])  # names no notification
    await store.add_timers([NewTimer(PUSH_SEND, PUSH_OWNER, store_clock.now(), {"notification_id": "n1"})])
    assert await store.finish_timer(first)
    found = await store.webhook_deliveries_of(["n1", "n2", "n3"])
    assert {nid: [j.id for j in jobs] for nid, jobs in found.items()} == {
        "n1": [first, second],
        "n2": [other],
    }
    assert [j.state for j in found["n1"]] == ["done", "pending"]
    assert await store.webhook_deliveries_of([]) == {}


async def test_notifications_between_two_seqs_are_every_users_own_and_live(
    store: Any, store_clock: ManualClock
) -> None:
    notes = await store.insert_notifications(
        [
            _draft("ana", "a"),
            _draft(BROADCAST_RECIPIENT, "everyone"),
            _draft("ben", "short-lived", ttl=60),
            _draft("ana", "b"),
            _draft("cy", "c"),
        ]
    )
    seqs = [n.seq for n in notes]
    found = await store.notifications_between(0, ALL_SEQS, limit=10)
    assert [n.title for n in found] == ["a", "short-lived", "b", "c"]
    assert (found[0].id, found[0].seq, found[0].user_id) == (notes[0].id, seqs[0], "ana")
    assert [n.title for n in await store.notifications_between(seqs[0], seqs[3], limit=10)] == [
        "short-lived",
        "b",
    ]
    assert [n.title for n in await store.notifications_between(0, ALL_SEQS, limit=2)] == ["a", "short-lived"]
    store_clock.advance(61)
    assert [n.title for n in await store.notifications_between(0, ALL_SEQS, limit=10)] == ["a", "b", "c"]


async def test_a_digest_is_started_then_joined_then_closed_and_a_new_one_started(
    store: Any, store_clock: ManualClock
) -> None:
    (route,) = await store.add_timers(
        [NewTimer("push", PUSH_OWNER, store_clock.now(), {"notification_ids": []})]
    )
    # Two notifications of one type for one user in one job: both land, in order.
    await store.route_push(
        route.id, [], [_join(store_clock, "n1"), _join(store_clock, "n2"), _join(store_clock, "m1", "ben")]
    )
    started = store_clock.now()
    store_clock.advance(60)
    await store.enqueue_webhooks([], through_seq=3, joins=[_join(store_clock, "n3")])
    digest = await store.find_timer_by_key(DIGEST_OWNER, DIGEST, '["ana", "lab"]')
    assert digest is not None
    assert digest.payload == {"user_id": "ana", "type": "lab", "notification_ids": ["n1", "n2", "n3"]}
    assert digest.due_at == _ms(started + timedelta(seconds=300)), "a join never moves the window"
    bens = await store.find_timer_by_key(DIGEST_OWNER, DIGEST, '["ben", "lab"]')
    assert bens is not None
    assert bens.payload["notification_ids"] == ["m1"]

    store_clock.advance(240)
    closing = [j for j in await store.due_timers(limit=10) if j.id == digest.id]
    assert closing, "the digest is due when its window ends"
    await store.route_push(
        digest.id,
        [NewTimer("webhook_digest_event", DIGEST_OWNER, store_clock.now(), {"digest_id": digest.id})],
    )
    await store.enqueue_webhooks([], joins=[_join(store_clock, "n4")])
    (closed,) = await store.get_timers(DIGEST_OWNER, [digest.id])
    assert closed.state == "done"
    assert closed.payload["notification_ids"] == ["n1", "n2", "n3"], "a closed digest never changes"
    fresh = await store.find_timer_by_key(DIGEST_OWNER, DIGEST, '["ana", "lab"]')
    assert fresh is not None
    assert (fresh.state, fresh.payload["notification_ids"]) == ("pending", ["n4"])
    assert fresh.id != digest.id


async def test_a_payload_whose_data_holds_a_nul_is_finished_and_kept_intact(
    store: Any, store_clock: ManualClock
) -> None:
    # A notification's data may hold a NUL; a scheduled send keeps it in its job until it runs.
    data = {"code": "a\u0000b", "path": "C:\\u0000"}
    content = {"title": "Due", "data": data}
    owner = "apikey:0123456789ab"
    jobs = await store.add_timers(
        [NewTimer("test_send", owner, store_clock.now(), {"user_id": u, "content": content}) for u in "abc"]
    )
    assert (await store.get_timers(owner, [jobs[0].id]))[0].payload["content"] == content
    assert await store.cancel_timer(owner, jobs[0].id)
    assert await store.finish_timer(jobs[1].id)
    draft = NotificationDraft(user_id="c", type="custom", title="Due", message="", data=data)
    await store.insert_notifications([draft], timer_claim(jobs[2].id))  # done by the claim's trigger
    done = await store.get_timers(owner, [j.id for j in jobs])
    assert [(j.state, j.payload) for j in done] == [
        ("cancelled", {"user_id": "a"}),
        ("done", {"user_id": "b"}),
        ("done", {"user_id": "c"}),
    ]
    payload = {"endpoint": "e1", "content": content, "notification_id": "n1"}
    (wid,) = await store.enqueue_webhooks(
        [NewTimer(WEBHOOK_DELIVERY, WEBHOOKS_OWNER, store_clock.now(), payload)]
    )
    await store.webhook_attempt_failed(wid, None, "HTTP 500")
    (dead,) = await store.dead_webhooks(limit=1)
    assert dead.payload["content"] == content
    assert list(dead.payload) == ["endpoint", "content", "notification_id", "last_error", "last_attempt_at"]
    assert await store.revive_dead_webhook(wid, "staff:alice")
    (found,) = (await store.webhook_deliveries_of(["n1"]))["n1"]
    assert found.payload["content"] == content
