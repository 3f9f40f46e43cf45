"""The store contract, reads and delivery marks: the same tests on SQLite and PostgreSQL
(`store_backends.store`).

Reading back what was stored, resume pages and history, unread counts, acknowledgements and
reads (and what the mark listeners hear), idempotency records, writes that fail alone, queued
writes on close. The purge: test_store_contract_purge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.json_encoding import encode_json
from diagnoxix.models import BROADCAST_RECIPIENT, NotificationDraft
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.protocols import IdempotencyClaim, IdempotencyConflict, StoreError
from diagnoxix.store.sqlite.store import SqliteStore

# An upper bound past every seq these tests make.
ALL = 10**9


def _draft(user: str = "u1", title: str = "t", **fields: Any) -> NotificationDraft:
    fields.setdefault("priority", "normal")
    return NotificationDraft(user_id=user, type="custom", title=title, message="m", data={"k": 1}, **fields)


def _twin(store: Any, clock: ManualClock) -> Any:
    """Another store on the same database (a restart, or a second process)."""
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path, clock=clock)
    assert isinstance(store, PgStore)
    return PgStore(store._dsn, clock=clock)


def _marks(store: Any) -> list[tuple[str, dict[tuple[str, str], int]]]:
    heard: list[tuple[str, dict[tuple[str, str], int]]] = []

    def listener(kind: str, counts: Mapping[tuple[str, str], int]) -> None:
        heard.append((kind, dict(counts)))

    store.add_mark_listener(listener)
    return heard


async def test_stored_rows_read_back_exactly(store: Any) -> None:
    (note,) = await store.insert_notifications([_draft("u1", "Lab Result Ready")])
    (again,) = await store.get_notifications([note.id])
    assert again == note
    page = await store.notifications_for("u1", after_seq=0, upto_seq=note.seq, limit=10)
    assert page == [note]
    assert await store.notifications_for("u2", after_seq=0, upto_seq=note.seq, limit=10) == []


async def test_resume_pages_are_the_users_own_and_broadcasts_in_seq_order(store: Any) -> None:
    sent = [
        *await store.insert_notifications([_draft("u1", "a"), _draft("u2", "not yours")]),
        *await store.insert_notifications([_draft(BROADCAST_RECIPIENT, "everyone")]),
        *await store.insert_notifications([_draft("u1", f"n{i}") for i in range(5)]),
    ]
    mine = [n for n in sent if n.user_id in ("u1", BROADCAST_RECIPIENT)]
    assert await store.notifications_for("u1", after_seq=0, upto_seq=ALL, limit=100) == mine
    # Pages: after a cursor, up to a bound, at most `limit`.
    assert (
        await store.notifications_for("u1", after_seq=mine[1].seq, upto_seq=mine[4].seq, limit=2) == mine[2:4]
    )
    assert await store.notifications_for("u1", after_seq=mine[-1].seq, upto_seq=ALL, limit=10) == []
    # Undelivered only: a broadcast counts as delivered to a user once they have its receipt.
    store.record_deliveries([(mine[0].id, "u1")], [(mine[1].id, "u1")])
    await store.flush()
    left = await store.notifications_for("u1", after_seq=0, upto_seq=ALL, limit=100, undelivered_only=True)
    assert left == mine[2:]
    others = await store.notifications_for("u3", after_seq=0, upto_seq=ALL, limit=100, undelivered_only=True)
    assert [n.id for n in others] == [mine[1].id]
    limited = await store.notifications_for("u1", after_seq=0, upto_seq=ALL, limit=2, undelivered_only=True)
    assert limited == mine[2:4]


async def test_history_is_newest_first_by_type_and_unread(store: Any) -> None:
    await store.insert_notifications([_draft("u1", "a")])
    (b,) = await store.insert_notifications(
        [NotificationDraft(user_id="u1", type="lab", title="b", message="m", data={})]
    )
    (c,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT, "c")])
    (d,) = await store.insert_notifications([_draft("u1", "d")])
    await store.insert_notifications([_draft("u2", "other")])

    async def titles(**query: Any) -> list[str]:
        query.setdefault("before_seq", None)
        query.setdefault("limit", 10)
        return [n.title for n in await store.history("u1", **query)]

    assert await titles() == ["d", "c", "b", "a"]
    assert await titles(limit=2) == ["d", "c"]
    assert await titles(before_seq=c.seq, limit=2) == ["b", "a"]
    assert await titles(type="lab") == ["b"]
    assert await titles(type="custom") == ["d", "c", "a"]
    # Read state is kept for the user's own notifications: broadcasts are never "unread".
    assert await store.mark_read("u1", [d.id]) == [d.id]
    assert await titles(unread_only=True) == ["b", "a"]
    assert await titles(unread_only=True, type="custom") == ["a"]
    assert await titles(unread_only=True, before_seq=b.seq) == ["a"]


async def test_unread_counts_the_users_own_up_to_a_seq(store: Any) -> None:
    notes = await store.insert_notifications([_draft("u1", f"n{i}") for i in range(4)])
    await store.insert_notifications([_draft(BROADCAST_RECIPIENT), _draft("u2")])
    assert await store.unread_count("u1") == 4
    assert await store.unread_count("u1", upto_seq=notes[1].seq) == 2
    assert await store.unread_count("u2") == 1
    assert await store.unread_count("nobody") == 0
    await store.mark_read("u1", [notes[0].id])
    assert await store.unread_count("u1") == 3


async def test_get_notifications_keeps_the_order_asked_and_skips_what_is_not_there(store: Any) -> None:
    notes = await store.insert_notifications([_draft("u1", "a"), _draft("u2", "b"), _draft("u3", "c")])
    asked = [notes[2].id, "no-such-id", notes[0].id, "\x00", notes[1].id]
    assert [n.title for n in await store.get_notifications(asked)] == ["c", "a", "b"]
    assert await store.get_notifications([]) == []


async def test_delivery_is_recorded_once(store: Any) -> None:
    notes = await store.insert_notifications([_draft(), _draft()])
    store.record_deliveries([(notes[0].id, "u1")], [])
    store.record_deliveries([(notes[0].id, "u1")], [])
    store.record_deliveries([(notes[1].id, "someone-else")], [])
    await store.flush()
    assert (await store.counts()).delivered == 1
    undelivered = await store.notifications_for(
        "u1", after_seq=0, upto_seq=99, limit=10, undelivered_only=True
    )
    assert [n.id for n in undelivered] == [notes[1].id]


async def test_delivery_records_share_one_transaction_and_count_right(store: Any) -> None:
    notes = await store.insert_notifications([_draft("u1", f"n{i}") for i in range(300)])
    (broadcast,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT)])
    before = await store.counts()
    for note in notes:
        store.record_deliveries([(note.id, "u1")], [(broadcast.id, f"user-{note.seq}")])
    store.record_deliveries([(notes[0].id, "u1")], [(broadcast.id, f"user-{notes[0].seq}")])  # again
    store.record_deliveries([], [("no-such-broadcast", "u1")])  # no receipt of nothing
    await store.flush()
    after = await store.counts()
    assert after.delivered - before.delivered == 300
    assert after.commits - before.commits <= 2
    for user in (f"user-{notes[0].seq}", f"user-{notes[-1].seq}"):
        assert (
            await store.notifications_for(user, after_seq=0, upto_seq=ALL, limit=5, undelivered_only=True)
            == []
        )
    assert await store.notifications_for("u9", after_seq=0, upto_seq=ALL, limit=5, undelivered_only=True) == [
        broadcast
    ]


async def test_acknowledge_confirms_only_the_users_own_and_broadcasts(store: Any) -> None:
    heard = _marks(store)
    own = await store.insert_notifications([_draft("u1", "a", priority="high"), _draft("u1", "b")])
    (theirs,) = await store.insert_notifications([_draft("u2", "not yours")])
    (broadcast,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT, "all")])
    asked = [own[1].id, theirs.id, own[1].id, broadcast.id, "nope", "\x00", "x\ud800", own[0].id]
    assert await store.acknowledge("u1", asked) == [own[1].id, broadcast.id, own[0].id]
    assert heard == [("acknowledged", {("custom", "normal"): 2, ("custom", "high"): 1})]
    assert (
        await store.notifications_for("u1", after_seq=0, upto_seq=ALL, limit=10, undelivered_only=True) == []
    )
    # Someone else's stays undelivered; acknowledging again changes no notification's state.
    assert [n.id for n in await store.notifications_for("u2", after_seq=0, upto_seq=ALL, limit=10)] == [
        theirs.id,
        broadcast.id,
    ]
    assert (await store.get_notifications([theirs.id]))[0].delivered_at is None
    assert await store.acknowledge("u1", [own[0].id]) == [own[0].id]
    assert await store.acknowledge("u1", [theirs.id]) == []
    assert len(heard) == 1
    assert (await store.counts()).delivered == 2


async def test_mark_read_marks_the_users_own_once_and_delivers_them(store: Any) -> None:
    heard = _marks(store)
    own = await store.insert_notifications([_draft("u1", "a"), _draft("u1", "b", priority="critical")])
    (theirs,) = await store.insert_notifications([_draft("u2")])
    (broadcast,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT)])
    asked = [own[1].id, theirs.id, broadcast.id, own[1].id, "\x00", own[0].id]
    assert await store.mark_read("u1", asked) == [own[1].id, own[0].id]
    assert heard == [("read", {("custom", "critical"): 1, ("custom", "normal"): 1})]
    for note in await store.get_notifications([n.id for n in own]):
        assert note.read_at is not None
        assert note.delivered_at == note.read_at
    assert await store.unread_count("u1") == 0
    assert await store.unread_count("u2") == 1
    # Again: still theirs, but nothing changed state.
    assert await store.mark_read("u1", [own[0].id]) == [own[0].id]
    assert len(heard) == 1
    assert await store.mark_read("u1", []) == []


async def test_mark_all_read_counts_what_changed(store: Any) -> None:
    heard = _marks(store)
    notes = await store.insert_notifications(
        [_draft("u1", "a"), _draft("u1", "b", priority="high"), _draft("u1", "c"), _draft("u2", "d")]
    )
    await store.insert_notifications([_draft(BROADCAST_RECIPIENT)])
    await store.mark_read("u1", [notes[0].id])
    assert await store.mark_all_read("u1") == 2
    assert heard[-1] == ("read", {("custom", "high"): 1, ("custom", "normal"): 1})
    assert await store.unread_count("u1") == 0
    assert await store.unread_count("u2") == 1
    assert await store.mark_all_read("u1") == 0
    assert len(heard) == 2


async def test_read_all_never_marks_a_notification_newer_than_the_request(store: Any) -> None:
    await store.insert_notifications([_draft("u1", "seen")])
    # Both may land in one transaction, where updates run after inserts.
    marked, (new,) = await asyncio.gather(
        store.mark_all_read("u1"), store.insert_notifications([_draft("u1", "critical, unseen")])
    )
    (again,) = await store.get_notifications([new.id])
    if marked == 2:
        # PostgreSQL reads the bound (the last seq any process committed) before its update is
        # queued: an insert that commits meanwhile was committed when asked, and is read too.
        assert isinstance(store, PgStore)
        assert again.read_at is not None
        return
    assert marked == 1
    assert await store.unread_count("u1") == 1
    assert again.read_at is None


async def test_every_read_sees_every_commit_before_it_even_under_concurrent_reads(store: Any) -> None:
    """A resume reads the backlog right after the hub handed out its watermark: that read must
    see every notification committed before it, however many other reads are in flight."""
    for i in range(20):
        await store.insert_notifications([_draft(f"bg{i}", "old") for _ in range(3)])
    stop = asyncio.Event()

    async def background_reader(i: int) -> None:
        while not stop.is_set():
            await store.notifications_for(f"bg{i}", after_seq=0, upto_seq=ALL, limit=200)

    readers = [asyncio.create_task(background_reader(i)) for i in range(20)]
    missed = 0
    try:
        for _ in range(100):
            (note,) = await store.insert_notifications([_draft("u1")])
            rows = await store.notifications_for("u1", after_seq=note.seq - 1, upto_seq=note.seq, limit=10)
            missed += not rows
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert missed == 0


async def test_a_taken_idempotency_key_fails_only_its_own_write(store: Any) -> None:
    claim = IdempotencyClaim("key1", "retry-42", "hash", 201)
    results: tuple[Any, ...] = await asyncio.gather(
        store.insert_notifications([_draft("u1", "a"), _draft("u1", "b")], claim),
        store.insert_notifications([_draft("u1", "c")], claim),
        store.insert_notifications([_draft("u2", "d")]),
        return_exceptions=True,
    )
    first, second, plain = results
    assert isinstance(second, IdempotencyConflict)
    assert not isinstance(first, BaseException)
    assert not isinstance(plain, BaseException)
    # One transaction, and the refused write leaves no gap in the seqs of the others.
    assert [n.seq for n in first] + [n.seq for n in plain] == [1, 2, 3]
    assert (await store.counts()).stored == 3
    record = await store.get_idempotency("key1", "retry-42")
    assert record is not None
    assert (record.request_hash, record.status) == ("hash", 201)
    assert list(record.notification_ids) == [n.id for n in first]
    assert await store.get_idempotency("key1", "retry-43") is None
    assert await store.get_idempotency("key2", "retry-42") is None
    with pytest.raises(IdempotencyConflict):  # and in a later transaction too
        await store.insert_notifications([_draft("u1", "e")], claim)


async def test_a_write_that_cannot_be_stored_fails_alone(store: Any) -> None:
    bad = NotificationDraft(
        user_id="u1", type="custom", title="t", message="m", data={"value": float("nan")}, priority="normal"
    )
    results: tuple[Any, ...] = await asyncio.gather(
        store.insert_notifications([bad]),
        store.insert_notifications([_draft("u1", "ok")]),
        return_exceptions=True,
    )
    refused, kept = results
    assert isinstance(refused, StoreError)
    assert not isinstance(kept, BaseException)
    assert [n.title for n in kept] == ["ok"]
    assert [n.title for n in await store.history("u1", before_seq=None, limit=10)] == ["ok"]


async def test_a_draft_the_database_refuses_fails_alone(store: Any) -> None:
    # A priority the schema's CHECK rejects, from a Python caller that skipped validation.
    bad = NotificationDraft(user_id="u1", type="custom", title="t", message="m", data={}, priority="urgent")  # type: ignore[arg-type]
    results = await asyncio.gather(
        store.insert_notifications([_draft("u2", "innocent-1")]),
        store.insert_notifications([bad]),
        store.insert_notifications([_draft("u3", "innocent-2")]),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreError)
    assert [[n.title for n in r] for r in (results[0], results[2]) if isinstance(r, list)] == [
        ["innocent-1"],
        ["innocent-2"],
    ]


async def test_text_the_database_cannot_take_fails_alone(store: Any) -> None:
    # A Python caller that skips validation can hand over a lone surrogate, which UTF-8 cannot
    # hold; it shares its batch with the others and must fail alone.
    results = await asyncio.gather(
        store.insert_notifications([_draft("u2", "a")]),
        store.insert_notifications([_draft("u9", "x\ud800")]),
        store.insert_notifications([_draft("u3", "c")]),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreError)
    assert [n.title for r in (results[0], results[2]) if isinstance(r, list) for n in r] == ["a", "c"]


async def test_a_big_batch_commits_whole_in_seq_order_with_its_data_verbatim(store: Any) -> None:
    claim = IdempotencyClaim("key1", "burst", "hash", 201)
    tricky = {"é": 'ü \u2028 "q" \\', "n": [1, 2.5, None, True], "big": 12345678901234567890}
    results = await asyncio.gather(
        store.insert_notifications([_draft("a", f"a{i}") for i in range(1500)], claim),
        store.insert_notifications([_draft("b", "refused")], claim),  # same key: refused alone
        store.insert_notifications(
            [
                NotificationDraft(user_id="c", type="t", title=f"c{i}", message="m", data=tricky)
                for i in range(1500)
            ]
        ),
        store.insert_notifications([_draft("d", f"d{i}") for i in range(1500)]),
        return_exceptions=True,
    )
    assert isinstance(results[1], IdempotencyConflict)
    accepted = [n for r in results if isinstance(r, list) for n in r]
    assert [n.seq for n in accepted] == list(range(1, 4501))
    assert (await store.counts()).stored == 4500
    for note in accepted[::500]:
        assert json.loads(note.encode_frame()) == {**note.to_wire(), "seq": note.seq}
    # The stored data is the very JSON the frame carries, so a replay sends the same bytes.
    (again,) = await store.get_notifications([accepted[1500].id])
    assert f'"data":{encode_json(tricky)},' in again.encode_frame()
    assert again.encode_frame() == accepted[1500].encode_frame()


async def test_queued_writes_are_committed_before_close(store: Any, store_clock: ManualClock) -> None:
    (first,) = await store.insert_notifications([_draft()])
    pending = [asyncio.ensure_future(store.insert_notifications([_draft()])) for _ in range(50)]
    store.record_deliveries([(first.id, "u1")], [])
    await asyncio.sleep(0)
    await store.close()
    assert all(p.done() and not p.exception() for p in pending)
    reopened = _twin(store, store_clock)
    await reopened.open()
    try:
        counts = await reopened.counts()
        assert (counts.stored, counts.delivered) == (51, 1)
        assert await reopened.last_seq() == 51
    finally:
        await reopened.close()
