"""The store contract, critical results: the same tests on SQLite and PostgreSQL
(`store_backends.store`). Groups and members, items and their sends, copies recorded with the send
that stored them, the timeline, acknowledging once (corrections with seqs of their own, pending
steps cancelled), a step finished once, a scheduled send's job opening its item once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.models import format_timestamp, parse_timestamp
from diagnoxix.store.correction_records import Correction
from diagnoxix.store.critical_records import (
    Acknowledgement,
    CriticalEvent,
    CriticalItemExists,
    critical_owner,
)
from diagnoxix.store.protocols import IdempotencyConflict
from diagnoxix.store.timer_records import NewTimer

from .critical_support import open_item, plain_drafts, send_step

BY_HTTP = Acknowledgement("u1", "http", device="tok-1")


def _events(timeline: list[CriticalEvent]) -> list[tuple[Any, ...]]:
    return [(e.event, e.step, e.user_id) for e in timeline]


async def test_groups_and_their_members_on_duty(store: Any) -> None:
    assert await store.put_group("role:lab") is True
    assert await store.put_group("role:lab") is False
    assert await store.put_group("ward-3") is True
    assert await store.group_members("nobody") is None
    assert await store.group_members("ward-3") == []
    assert await store.set_group_member("nobody", "u1", True) is False
    assert await store.set_group_member("role:lab", "u2", True) is True
    assert await store.set_group_member("role:lab", "u1", True) is True
    assert await store.set_group_member("role:lab", "u3", False) is True
    # Changing the switch keeps the member (and when they were added).
    added = (await store.group_members("role:lab"))[0].added_at
    store._clock.advance(60)
    assert await store.set_group_member("role:lab", "u1", False) is True
    members = await store.group_members("role:lab")
    assert [(m.group, m.user_id, m.on_duty) for m in members] == [
        ("role:lab", "u1", False),
        ("role:lab", "u2", True),
        ("role:lab", "u3", False),
    ]
    assert members[0].added_at == added
    groups = await store.list_groups()
    assert [(g.name, g.members, g.on_duty) for g in groups] == [("role:lab", 3, 1), ("ward-3", 0, 0)]
    assert await store.remove_group_member("role:lab", "u3") is True
    assert await store.remove_group_member("role:lab", "u3") is False
    # Deleting a group takes its members with it.
    assert await store.delete_group("role:lab") is True
    assert await store.delete_group("role:lab") is False
    assert await store.put_group("role:lab") is True
    assert await store.group_members("role:lab") == []


async def test_an_item_opens_with_its_event_and_its_sends_once(store: Any, store_clock: ManualClock) -> None:
    item = await open_item(store, "item-a", steps=[60, 180])
    assert (item.id, item.owner, item.target, item.type, item.priority) == (
        "item-a",
        "apikey:k1",
        "user:u1",
        "lab",
        "critical",
    )
    assert (item.state, item.requires_ack, item.policy, item.acknowledged_at) == ("open", True, "lab", None)
    assert item.created_at == parse_timestamp(format_timestamp(store_clock.now()))
    assert item.next_step_at == item.created_at
    (opened,) = await store.critical_timeline("item-a")
    assert (opened.event, opened.actor) == ("opened", "apikey:k1")
    assert opened.details == {"target": "user:u1", "policy": "lab", "requires_ack": True}
    with pytest.raises(CriticalItemExists):
        await open_item(store, "item-a")
    assert len(await store.critical_timeline("item-a")) == 1
    store_clock.advance(1)
    plain = await open_item(store, "item-b", target="group:ward-3", requires_ack=False)
    assert plain.state == "sent"
    assert [i.id for i in await store.critical_items(open_only=False, limit=10)] == ["item-b", "item-a"]
    assert [i.id for i in await store.critical_items(open_only=True, limit=10)] == ["item-a"]
    assert [i.id for i in await store.critical_items(open_only=False, limit=1)] == ["item-b"]
    assert await store.critical_item("nope") is None


async def test_a_send_records_its_copies_and_their_events_in_its_transaction(
    store: Any, store_clock: ManualClock
) -> None:
    item = await open_item(store, "item-c", target="group:ward-3", steps=[60])
    first = await send_step(store, "item-c", 0, ["u2", "u1"])
    copies = await store.critical_copies("item-c")
    assert [(c.notification_id, c.user_id, c.step) for c in copies] == [(n.id, n.user_id, 0) for n in first]
    assert all(c.delivered_at is None and c.read_at is None for c in copies)
    found = await store.critical_item_of(first[1].id)
    assert found is not None
    assert found.id == "item-c"
    # The first send is done: the next step is the escalation's.
    assert found.next_step_at == item.created_at + timedelta(seconds=60)
    store_clock.advance(60)
    (late,) = await send_step(store, "item-c", 1, ["u3"], ttl_seconds=30)
    assert [c.step for c in await store.critical_copies("item-c")] == [0, 0, 1]
    assert _events(await store.critical_timeline("item-c")) == [
        ("opened", None, None),
        ("sent", 0, "u2"),
        ("sent", 0, "u1"),
        ("escalated", 1, "u3"),
    ]
    assert (await store.critical_timeline("item-c"))[-1].channel == "socket"
    assert (await store.critical_item("item-c")).next_step_at is None
    # A send runs once: its claim is taken.
    with pytest.raises(IdempotencyConflict):
        await send_step(store, "item-c", 0, ["u1"])
    # An expired copy is left out; a notification that is no copy belongs to no item.
    store_clock.advance(31)
    assert late.id not in [c.notification_id for c in await store.critical_copies("item-c")]
    (other,) = await store.insert_notifications(plain_drafts(["u1"]))
    assert await store.critical_item_of(other.id) is None


async def test_a_step_that_stores_nothing_is_finished_once_with_its_events(store: Any) -> None:
    await open_item(store, "item-d", steps=[60])
    await send_step(store, "item-d", 0, ["u1"])
    events = [CriticalEvent("item-d", "channel_not_configured", step=1, channel="push")]
    await store.finish_critical_step("item-d.1", events)
    with pytest.raises(IdempotencyConflict):
        await store.finish_critical_step("item-d.1", events)
    with pytest.raises(IdempotencyConflict):
        await send_step(store, "item-d", 1, ["u1"])
    timeline = await store.critical_timeline("item-d")
    assert _events(timeline)[-1] == ("channel_not_configured", 1, None)
    assert timeline[-1].channel == "push"
    assert (await store.critical_item("item-d")).next_step_at is None


async def test_events_recorded_without_waiting_commit_with_the_next_batch(store: Any) -> None:
    await open_item(store, "item-e")
    store.record_critical_events(
        [
            CriticalEvent("item-e", "escalated", step=1, channel="webhook", details={"to": 2}),
            CriticalEvent("item-e", "channel_failed", step=1, channel="push"),
        ]
    )
    await store.flush()
    timeline = await store.critical_timeline("item-e")
    assert [(e.event, e.channel, e.details) for e in timeline[1:]] == [
        ("escalated", "webhook", {"to": 2}),
        ("channel_failed", "push", {}),
    ]


async def test_acknowledging_closes_the_item_once_cancels_its_steps_and_corrects_each_copy(
    store: Any, store_clock: ManualClock
) -> None:
    heard: list[Correction] = []
    store.add_correction_listener(heard.append)
    await open_item(store, "item-f", target="group:ward-3", steps=[60, 120])
    copies = await send_step(store, "item-f", 0, ["u1", "u2", "u3"], ttl_seconds=7200)
    store_clock.advance(3599)
    (expiring,) = await send_step(store, "item-f", 1, ["u4"], ttl_seconds=1)
    store_clock.advance(1)  # u4's copy has just expired: it gets no correction
    before = await store.last_seq()
    results = await asyncio.gather(*(store.acknowledge_critical("item-f", BY_HTTP) for _ in range(4)))
    (done,) = [r for r in results if r.outcome == "done"]
    assert sorted(r.outcome for r in results) == ["already", "already", "already", "done"]
    item = done.item
    assert (item.state, item.acknowledged_by, item.acknowledged_via, item.device, item.on_behalf) == (
        "acknowledged",
        "u1",
        "http",
        "tok-1",
        False,
    )
    assert item.acknowledged_at == item.created_at + timedelta(seconds=3600)
    assert item.next_step_at is None
    fixes = done.corrections
    assert [f.seq for f in fixes] == [before + 1, before + 2, before + 3]
    assert [(f.notification_id, f.user_id, f.kind) for f in fixes] == [
        (n.id, n.user_id, "acknowledged") for n in copies
    ]
    assert fixes[0].details == {"critical_id": "item-f", "by": "u1", "on_behalf": False}
    assert len({f.id for f in fixes}) == 3
    assert expiring.id not in [f.notification_id for f in fixes]
    assert heard == list(fixes)
    assert await store.last_seq() == before + 3
    # The rest of the chain never runs.
    with pytest.raises(IdempotencyConflict):
        await store.finish_critical_step("item-f.2", [])
    with pytest.raises(IdempotencyConflict):
        await send_step(store, "item-f", 2, ["u9"])
    acked = [e for e in await store.critical_timeline("item-f") if e.event.startswith("acknowledged")]
    assert [(e.event, e.user_id, e.actor, e.details) for e in acked] == [
        ("acknowledged", "u1", "u1", {"via": "http", "on_behalf": False, "device": "tok-1"})
    ]
    again = await store.acknowledge_critical("item-f", Acknowledgement("u2", "socket"))
    assert (again.outcome, again.item.acknowledged_by, again.corrections) == ("already", "u1", ())
    assert (await store.acknowledge_critical("nope", BY_HTTP)).outcome == "not_found"
    assert len(heard) == 3


async def test_on_behalf_records_the_reason_and_an_item_that_needs_none_is_never_open(store: Any) -> None:
    await open_item(store, "item-g")
    (copy,) = await send_step(store, "item-g", 0, ["u1"])
    staff = Acknowledgement("apikey:k1", "http", on_behalf=True, reason="phoned the ward")
    result = await store.acknowledge_critical("item-g", staff)
    assert result.outcome == "done"
    assert (result.item.on_behalf, result.item.acknowledged_by) == (True, "apikey:k1")
    assert [(f.notification_id, f.details["on_behalf"]) for f in result.corrections] == [(copy.id, True)]
    last = (await store.critical_timeline("item-g"))[-1]
    assert (last.event, last.user_id, last.actor) == ("acknowledged_on_behalf", None, "apikey:k1")
    assert last.details == {"via": "http", "on_behalf": True, "reason": "phoned the ward"}
    # A group send that needs no acknowledgement cannot be acknowledged.
    await open_item(store, "item-h", target="group:ward-3", requires_ack=False)
    await send_step(store, "item-h", 0, ["u1"])
    plain = await store.acknowledge_critical("item-h", BY_HTTP)
    assert (plain.outcome, plain.item.state) == ("already", "sent")
    # An item acknowledged before any copy was stored closes with no correction.
    await open_item(store, "item-i")
    early = await store.acknowledge_critical("item-i", BY_HTTP)
    assert (early.outcome, early.corrections) == ("done", ())
    with pytest.raises(IdempotencyConflict):
        await send_step(store, "item-i", 0, ["u1"])


async def test_a_scheduled_sends_job_opens_its_item_once(store: Any) -> None:
    await open_item(store, "item-j", claim_timer="sched-1")
    # The job ran already (or was cancelled): nothing of a second item is stored.
    with pytest.raises(IdempotencyConflict):
        await open_item(store, "item-k", claim_timer="sched-1")
    assert await store.critical_item("item-k") is None
    assert await store.critical_timeline("item-k") == []
    # A taken claim is told before a taken id (a job run twice opens the same id twice).
    with pytest.raises(IdempotencyConflict):
        await open_item(store, "item-j", claim_timer="sched-1")
    with pytest.raises(CriticalItemExists):
        await open_item(store, "item-j", claim_timer="sched-2")
    # The second claim was undone with the refused item: the job may still open another.
    await open_item(store, "item-l", claim_timer="sched-2")


async def test_a_scheduled_sends_job_is_done_with_its_item_and_names_it(store: Any) -> None:
    if not hasattr(store, "add_timers"):
        pytest.skip("this store's timers are not ported yet")
    owner = "apikey:k1"
    due = store._clock.now()
    payload = {"user_id": "u1", "critical": True, "content": {"title": "K+"}}
    (job,) = await store.add_timers([NewTimer("scheduled_send", owner, due, payload)])
    await open_item(store, "item-m", claim_timer=job.id)
    (after,) = await store.get_timers(owner, [job.id])
    assert after.state == "done"
    assert after.payload == {"user_id": "u1", "critical": True, "critical_id": "item-m"}
    assert critical_owner("item-m") == "critical:item-m"


async def test_a_copy_delivered_adds_a_delivered_event(store: Any) -> None:
    if not hasattr(store, "acknowledge"):
        pytest.skip("this store's delivery marks are not ported yet")
    await open_item(store, "item-n", target="group:ward-3")
    copies = await send_step(store, "item-n", 0, ["u1", "u2"])
    assert await store.acknowledge("u2", [copies[1].id]) == [copies[1].id]
    assert await store.acknowledge("u2", [copies[1].id]) in ([], [copies[1].id])
    timeline = await store.critical_timeline("item-n")
    assert _events(timeline)[-1] == ("delivered", 0, "u2")
    assert [e.event for e in timeline].count("delivered") == 1
    (delivered,) = [c for c in await store.critical_copies("item-n") if c.delivered_at is not None]
    assert delivered.user_id == "u2"


async def test_copies_delivered_among_other_notifications_add_one_event_each(store: Any) -> None:
    """Delivery marks come in batches of mostly other notifications: only the copies among them
    add a `delivered` event, once each however often they are marked."""
    if not hasattr(store, "acknowledge"):
        pytest.skip("this store's delivery marks are not ported yet")
    await open_item(store, "item-p", target="group:ward-4")
    copies = await send_step(store, "item-p", 0, ["u1", "u2", "u3"])
    others = await store.insert_notifications(plain_drafts(["u1", "u2", "u4"]))
    batch = [(n.id, n.user_id) for n in [others[0], copies[0], others[1], copies[2], others[2]]]
    store.record_deliveries(batch, [])
    store.record_deliveries(batch[:2], [])
    await store.flush()
    timeline = await store.critical_timeline("item-p")
    delivered = sorted(e[2] for e in _events(timeline) if e[0] == "delivered")
    assert delivered == ["u1", "u3"]


async def test_a_copy_read_after_its_delivery_adds_no_second_delivered_event(store: Any) -> None:
    if not hasattr(store, "acknowledge"):
        pytest.skip("this store's delivery marks are not ported yet")
    await open_item(store, "item-q", target="group:ward-5")
    (copy,) = await send_step(store, "item-q", 0, ["u1"])
    store.record_deliveries([(copy.id, copy.user_id)], [])
    await store.flush()
    assert await store.mark_read("u1", [copy.id])
    timeline = await store.critical_timeline("item-q")
    assert [e.event for e in timeline].count("delivered") == 1
