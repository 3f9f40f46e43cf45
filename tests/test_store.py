"""The SQLite store on a real file: migrations, group commit, seq safety, restart, locking.

What every store must do, on SQLite and PostgreSQL alike, is in the contract tests
(test_store_contract*.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from diagnoxix.json_encoding import encode_json
from diagnoxix.keys import TOKENS
from diagnoxix.models import (
    Action,
    Links,
    Notification,
    NotificationDraft,
    assemble_notification,
    new_ids,
)
from diagnoxix.store.protocols import StoreError
from diagnoxix.store.push_records import NewPushSubscription
from diagnoxix.store.sqlite.migrations import MigrationError, discover
from diagnoxix.store.sqlite.store import SqliteStore

from .servers import start_app


def _draft(user: str = "u1", title: str = "t") -> NotificationDraft:
    return NotificationDraft(
        user_id=user, type="custom", title=title, message="m", data={"k": 1}, priority="normal"
    )


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = SqliteStore(tmp_path / "s.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


async def test_new_database_is_migrated_private_and_in_wal_mode(store: SqliteStore) -> None:
    path = store.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(discover())
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"notifications", "api_keys", "idempotency_keys", "audit_log", "meta"} <= tables
    assert len(store.epoch) == 32


async def test_concurrent_writes_share_few_commits(store: SqliteStore) -> None:
    results = await asyncio.gather(*(store.insert_notifications([_draft(title=f"n{i}")]) for i in range(500)))
    seqs = [notes[0].seq for notes in results]
    assert seqs == list(range(1, 501))
    counts = await store.counts()
    assert counts.stored == 500
    # Group commit: 500 concurrent sends must not cost 500 transactions (each one an fsync).
    assert counts.commits < 50, counts


async def test_the_writer_keeps_its_statement_journal_in_memory(store: SqliteStore) -> None:
    """A transaction that touches four 16 KiB pages would otherwise create, write and unlink a
    temporary file for its statement journal, on every commit."""
    writer = store._w
    temp_store = await writer._thread.call(
        lambda: writer._conn.execute("PRAGMA temp_store").fetchone()[0] if writer._conn else None
    )
    assert temp_store == 2  # MEMORY


async def test_seq_stays_unique_when_another_process_wrote(store: SqliteStore) -> None:
    await store.insert_notifications([_draft()])
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO notifications (seq, id, user_id, type, title, message, data, priority, created_at)"
            " VALUES (40, 'external', 'u1', 'x', 't', 'm', '{}', 'normal', '2026-01-01T00:00:00.000Z')"
        )
    (note,) = await store.insert_notifications([_draft()])
    assert note.seq == 41
    assert json.loads(note.encode_frame())["seq"] == 41  # built for seq 2 when staged, rebuilt


async def test_queued_writes_are_committed_before_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite3")
    await store.open()
    pending = [asyncio.ensure_future(store.insert_notifications([_draft()])) for _ in range(50)]
    store.record_audit("test", "close.check", None)
    await asyncio.sleep(0)
    await store.close()
    assert all(p.done() and not p.exception() for p in pending)
    reopened = SqliteStore(tmp_path / "q.sqlite3")
    await reopened.open()
    try:
        assert (await reopened.counts()).stored == 50
        assert await reopened.last_seq() == 50
        assert [e["action"] for e in await reopened.audit_entries()] == ["close.check"]
    finally:
        await reopened.close()


async def test_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    store = SqliteStore(path)
    with pytest.raises(MigrationError, match="newer"):
        await store.open()


async def test_a_second_server_on_the_same_file_is_refused(make_settings: Any) -> None:
    settings = make_settings()
    first = await start_app(settings)
    try:
        with pytest.raises(StoreError, match="already using"):
            await start_app(settings)
    finally:
        await first.close()
    # Once the first has stopped, the file is free again.
    third = await start_app(settings)
    await third.close()


async def test_generated_secret_survives_restart(make_settings: Any) -> None:
    settings = make_settings(secret_key=None)
    server = await start_app(settings)
    token = server.app[TOKENS].mint("patient-1").token
    await server.close()
    server = await start_app(settings)
    try:
        assert server.app[TOKENS].verify(token).user_id == "patient-1"
    finally:
        await server.close()


async def test_bookkeeping_writes_share_one_transaction_and_count_right(store: SqliteStore) -> None:
    notes = await store.insert_notifications([_draft("u1", f"n{i}") for i in range(300)])
    before = await store.counts()
    for note in notes:
        store.record_deliveries([(note.id, "u1")], [])
        store.record_audit("test", "delivered", note.id)
    store.record_deliveries([(notes[0].id, "u1")], [])  # again: not counted twice
    await store.flush()
    after = await store.counts()
    assert after.delivered - before.delivered == 300
    assert after.commits - before.commits <= 2
    assert len(await store.audit_entries(limit=1000)) == 300


def test_notification_ids_are_time_ordered_version_7_uuids() -> None:
    earlier, later = new_ids(300, 1_764_000_000_000), new_ids(300, 1_764_000_000_001)
    assert len(set(earlier + later)) == 600
    assert max(earlier) < min(later)  # later ids sort later: the id index grows at its end
    for text in earlier + later:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    assert uuid.UUID(earlier[0]).int >> 80 == 1_764_000_000_000


async def test_the_stored_data_is_the_very_json_the_frame_carries(store: SqliteStore) -> None:
    # The contract (test_store_contract_reads) reads it back through the store; here, the file.
    tricky = {"é": 'ü \u2028 "q" \\', "n": [1, 2.5, None, True], "big": 12345678901234567890}
    (note,) = await store.insert_notifications(
        [NotificationDraft(user_id="c", type="t", title="c", message="m", data=tricky)]
    )
    with sqlite3.connect(store.path) as conn:
        stored = conn.execute("SELECT data FROM notifications WHERE id = ?", (note.id,)).fetchone()[0]
    assert stored == encode_json(tricky)
    assert f'"data":{stored},' in note.encode_frame()


async def test_a_batch_that_cannot_be_prepared_never_wedges_the_writer(store: SqliteStore) -> None:
    # A bookkeeping row that cannot be encoded fails its whole batch while the transaction is
    # already open on the writer thread; it must be rolled back, and every later write succeed.
    store._w.execute_nowait("INSERT INTO audit_log (at) SELECT value FROM json_each(?)", [[object()]])
    await asyncio.sleep(0.05)
    await store.insert_notifications([_draft("u1", "after")])
    assert [n.title for n in await store.history("u1", before_seq=None, limit=10)] == ["after"]
    assert await store.audit_entries() == []


async def test_a_refused_insert_inside_the_thread_fails_alone(store: SqliteStore) -> None:
    # Past every check on the loop, SQLite itself refuses one insert (here a trigger an operator
    # might add); the others of the same statement are stored, in order, without a gap.
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON notifications WHEN NEW.title = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    results = await asyncio.gather(
        store.insert_notifications([_draft("u2", "a"), _draft("u2", "b")]),
        store.insert_notifications([_draft("u9", "poison")]),
        store.insert_notifications([_draft("u3", "c")]),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreError)
    stored = [n for r in (results[0], results[2]) if isinstance(r, list) for n in r]
    assert [n.title for n in stored] == ["a", "b", "c"]
    assert [n.seq for n in stored] == [1, 2, 3]
    # "c" was built while staged for seq 4 (the refusal was not known yet): its frame says 3.
    assert [json.loads(n.encode_frame())["seq"] for n in stored] == [1, 2, 3]
    assert [n.title for n in await store.history("u2", before_seq=None, limit=5)] == ["b", "a"]


async def test_an_awaited_write_of_several_rows_is_all_or_nothing(store: SqliteStore) -> None:
    with pytest.raises(StoreError):
        await store._w.execute(
            ("INSERT INTO meta (key, value) VALUES (?, ?)", [("half", "1"), ("half", "2")])
        )
    assert await store._read("SELECT key, value FROM meta WHERE key = 'half'", ()) == []


@pytest.mark.parametrize("name", ["clinic%20a", "ward#3", "what?.d"])
async def test_any_directory_name_works(tmp_path: Path, name: str) -> None:
    store = SqliteStore(tmp_path / name / "notify.sqlite3")
    await store.open()
    try:
        key = await store.create_api_key("k1", "n", "h" * 64)
        found = await store.find_api_key("k1")  # the point read, on the loop
        assert found is not None
        assert found[0].id == key.id
        assert store._point_conn is not None
        assert store._point_conn.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    finally:
        await store.close()


def test_the_stores_fast_constructor_sets_every_field_as_the_constructor_does() -> None:
    values: dict[str, Any] = {
        "seq": 7,
        "id": "n-7",
        "user_id": "u1",
        "type": "custom",
        "title": "t",
        "message": "m",
        "data": {"k": 1},
        "priority": "high",
        "created_at": datetime(2026, 1, 2, tzinfo=UTC),
        "expires_at": datetime(2026, 2, 2, tzinfo=UTC),
        "data_json": '{"k":1}',
        "created_text": "2026-01-02T00:00:00.000Z",
        "expires_text": "2026-02-02T00:00:00.000Z",
        "frame": "{}",
        "links": Links(url="https://portal.example/x", actions=(Action("Confirm", action="confirm"),)),
    }
    fast = assemble_notification(*values.values())
    built = Notification(**values)
    for field in dataclasses.fields(Notification):
        assert getattr(fast, field.name) == getattr(built, field.name), field.name


async def test_a_write_with_text_sqlite_cannot_bind_fails_alone_not_its_batch(store: SqliteStore) -> None:
    """A value the sqlite3 module cannot bind (a lone surrogate from a caller that skipped
    validation raises UnicodeEncodeError, not a sqlite3 error) fails its own write; the
    notifications and bookkeeping committed in the same batch are stored."""
    odd = NewPushSubscription("u2", "https://push.example/x", "p" * 87, "a" * 22, "push.example", "UA \ud800")
    results = await asyncio.gather(
        store.insert_notifications([_draft("u1", "before")]),
        store.add_push_subscription(odd, limit=5),
        store.insert_notifications([_draft("u1", "after")]),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreError), results[1]
    assert [type(r) for r in (results[0], results[2])] == [list, list], results
    page = await store.history("u1", before_seq=None, limit=10)
    assert sorted(n.title for n in page) == ["after", "before"]
