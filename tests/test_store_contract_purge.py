"""The store contract, the purge: the same tests on SQLite and PostgreSQL (`store_backends.store`).

Nothing expired is served, purged or not; the purge deletes in slices, records per recipient how
far it went (a resume cursor below that may have missed something), and never lets a seq be
handed out again."""

from __future__ import annotations

from typing import Any

from diagnoxix.clock import ManualClock
from diagnoxix.models import BROADCAST_RECIPIENT, NotificationDraft

ALL = 10**9


def _draft(user: str = "u1", title: str = "t", **fields: Any) -> NotificationDraft:
    fields.setdefault("priority", "normal")
    return NotificationDraft(user_id=user, type="custom", title=title, message="m", data={"k": 1}, **fields)


async def test_nothing_expired_is_served_even_before_the_purge(store: Any, store_clock: ManualClock) -> None:
    (short,) = await store.insert_notifications([_draft("u1", "short", ttl_seconds=60)])
    (kept,) = await store.insert_notifications([_draft("u1", "kept")])
    (gone_broadcast,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT, "b", ttl_seconds=60)])
    # Lifetimes by priority, and for broadcasts.
    (by_priority,) = await store.insert_notifications(
        [_draft("u1", "hi", priority="high")], lifetimes={"high": 30}
    )
    assert by_priority.expires_at is not None
    store_clock.advance(61)
    ids = [short.id, kept.id, gone_broadcast.id, by_priority.id]
    assert await store.notifications_for("u1", after_seq=0, upto_seq=ALL, limit=10) == [kept]
    assert await store.notifications_for(
        "u1", after_seq=0, upto_seq=ALL, limit=10, undelivered_only=True
    ) == [kept]
    assert [n.id for n in await store.history("u1", before_seq=None, limit=10)] == [kept.id]
    assert await store.get_notifications(ids) == [kept]
    assert await store.unread_count("u1") == 1
    assert await store.acknowledge("u1", ids) == [kept.id]
    assert await store.mark_read("u1", ids) == [kept.id]
    assert await store.mark_all_read("u1") == 0


async def test_the_purge_deletes_in_slices_and_records_how_far(store: Any, store_clock: ManualClock) -> None:
    await store.insert_notifications([_draft("u1", "kept")])
    expired = await store.insert_notifications([_draft("u1", f"e{i}", ttl_seconds=60) for i in range(1001)])
    (broadcast,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT, "b", ttl_seconds=60)])
    store.record_deliveries([], [(broadcast.id, "u2")])
    (newest,) = await store.insert_notifications([_draft("u3", "newest", ttl_seconds=60)])
    assert await store.purge_expired() == 0  # nothing has expired yet
    store_clock.advance(61)
    # Slice by slice, lowest seqs first; the marks move with each slice.
    assert await store.purge_expired() == 1000
    assert await store.purged_through("u1") == expired[999].seq
    assert await store.purged_through("u3") == 0
    assert await store.purge_expired() == 3
    assert await store.purge_expired() == 0
    assert await store.purged_through("u1") == broadcast.seq  # the user's own, or a broadcast
    # A broadcast's purge is everyone's; its receipts went with it.
    assert await store.purged_through("u2") == broadcast.seq
    assert await store.purged_through("u3") == newest.seq
    assert await store.purged_through("nobody") == broadcast.seq
    assert [n.title for n in await store.history("u1", before_seq=None, limit=10)] == ["kept"]
    assert (await store.counts()).stored == 1
    # A client may hold the purged newest seq as cursor: the next notification comes after it.
    (fresh,) = await store.insert_notifications([_draft("u3", "fresh")])
    assert fresh.seq == newest.seq + 1
    assert await store.last_seq() == fresh.seq
