"""The PostgreSQL store's stored and delivered counts, kept by the database (migration
`0004_counts`): exact after every path that changes notifications, from several processes at once,
never a queue of writers on one row, and seeded from the rows a database held before.

The truth each count is checked against is the table itself: count(*) and count(delivered_at).
Two `PgStore`s on one database are two processes (each its own pool and writer connection).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.models import BROADCAST_RECIPIENT, Notification, NotificationDraft
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.postgres.migrations import MIGRATIONS_DIR, migrate

from .pg_server import PgCluster, two_pg_stores


def _draft(user: str = "u1", title: str = "t", **fields: Any) -> NotificationDraft:
    return NotificationDraft(user_id=user, type="custom", title=title, message="m", data={}, **fields)


async def _truth(dsn: str) -> tuple[int, int]:
    """What a count over the table says."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*), count(delivered_at) FROM notifications")
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def _counted(store: PgStore) -> tuple[int, int]:
    """The store's counts, read again now: a write of its own first (a count is kept briefly
    unless this process committed since)."""
    await store.check_writable()
    counts = await store.counts()
    return counts.stored, counts.delivered


async def _exact(store: PgStore, dsn: str) -> tuple[int, int]:
    counted = await _counted(store)
    assert counted == await _truth(dsn)
    return counted


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def stores(pg_dsn: str, clock: ManualClock) -> AsyncIterator[tuple[PgStore, PgStore]]:
    """Two processes' stores on one database (the same clock: the machines agree on the time)."""
    async with two_pg_stores(pg_dsn, clock) as both:
        yield both


async def test_counts_follow_every_path_that_changes_notifications(
    stores: tuple[PgStore, PgStore], pg_dsn: str, clock: ManualClock
) -> None:
    store, _ = stores
    assert await _exact(store, pg_dsn) == (0, 0)
    batch = await store.insert_notifications([_draft(f"u{i % 7}", f"n{i}") for i in range(1000)])
    (lasting,) = await store.insert_notifications([_draft("u1", "lasting")])
    brief = await store.insert_notifications([_draft("u2", f"brief{i}", ttl_seconds=60) for i in range(5)])
    (broadcast,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT, "to all")])
    assert await _exact(store, pg_dsn) == (1007, 0)

    # Written to plain clients; a second record of the same one changes nothing.
    store.record_deliveries([(n.id, n.user_id) for n in batch[:10]], [(broadcast.id, "u1")])
    store.record_deliveries([(batch[0].id, batch[0].user_id)], [])
    await store.flush()
    assert await _exact(store, pg_dsn) == (1007, 10)
    # Acknowledged by a v1 client (one of them delivered already).
    u3 = [n for n in batch if n.user_id == "u3"]
    assert u3[0] in batch[:10]
    await store.acknowledge("u3", [n.id for n in u3[:3]])
    assert await _exact(store, pg_dsn) == (1007, 12)
    # Read: delivered too, once; a read of a delivered one counts nothing more.
    await store.mark_read("u2", [brief[0].id, brief[1].id])
    await store.mark_read("u3", [u3[0].id])
    assert await _exact(store, pg_dsn) == (1007, 14)
    u4_delivered = sum(1 for n in batch[:10] + u3[:3] if n.user_id == "u4")
    u4_all = sum(1 for n in batch if n.user_id == "u4")
    await store.mark_all_read("u4")
    assert await _exact(store, pg_dsn) == (1007, 14 + u4_all - u4_delivered)
    delivered = 14 + u4_all - u4_delivered

    # New words: nothing counted changes.
    assert (await store.update_notification(lasting.id, title="new", message=None)).outcome == "done"
    assert await _exact(store, pg_dsn) == (1007, delivered)
    # Retracted: one delivered (read above), one never delivered.
    assert (await store.retract_notification(brief[0].id)).outcome == "done"
    assert (await store.retract_notification(lasting.id)).outcome == "done"
    assert await _exact(store, pg_dsn) == (1005, delivered - 1)
    # Purged once expired: the four brief ones left, one of them delivered.
    clock.advance(61)
    assert await store.purge_expired() == 4
    assert await _exact(store, pg_dsn) == (1001, delivered - 2)

    # Anything else that changes the table, outside the store's own statements.
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("DELETE FROM notifications WHERE seq IN (SELECT seq FROM notifications LIMIT 3)")
        await conn.execute("UPDATE notifications SET delivered_at = NULL WHERE user_id = 'u4'")
        await _exact(store, pg_dsn)
        await conn.execute("TRUNCATE notifications")
        assert await _exact(store, pg_dsn) == (0, 0)
    finally:
        await conn.close()
    await store.insert_notifications([_draft()])
    assert await _exact(store, pg_dsn) == (1, 0)


async def test_a_thousand_row_insert_changes_a_counter_once(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO notifications (seq, id, user_id, type, title, message, priority, created_at)"
                " SELECT n, 'id-' || n, 'u1', 'custom', 't', 'm', 'normal', '2026-01-01T00:00:00.000Z'"
                " FROM generate_series(1, 1000) AS n"
            )
            # This transaction's own statistics: rows of the counters' table it changed.
            changed = await conn.fetchval(
                "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'notification_counts'"
            )
            assert changed == 1
        assert await conn.fetchval("SELECT sum(stored) FROM notification_counts") == 1000
    finally:
        await conn.close()


async def test_two_processes_writing_at_once_keep_the_counts_exact(
    stores: tuple[PgStore, PgStore], pg_dsn: str, clock: ManualClock
) -> None:
    a, b = stores

    async def work(store: PgStore, name: str) -> None:
        kept: list[Notification] = []
        for round_ in range(15):
            notes = await store.insert_notifications(
                [
                    _draft(f"{name}-{i % 5}", f"r{round_}", ttl_seconds=30 if i % 4 == 0 else None)
                    for i in range(40)
                ]
            )
            kept.extend(notes)
            store.record_deliveries([(n.id, n.user_id) for n in notes[:10]], [])
            await store.acknowledge(notes[10].user_id, [n.id for n in notes[10:15]])
            await store.mark_read(notes[15].user_id, [notes[15].id, notes[0].id])
            await store.retract_notification(notes[21].id)
            # The other process's notifications too: two devices of one user, each on its own.
            other = "b" if name == "a" else "a"
            await store.mark_all_read(f"{other}-{round_ % 5}")
            if name == "a" and round_ == 7:
                clock.advance(31)  # what expired so far is purged while both go on writing
            await store.purge_expired()

    # Many small writes from both at once, single sends among them.
    singles = [a.insert_notifications([_draft("a-0", f"s{i}")]) for i in range(50)]
    singles += [b.insert_notifications([_draft("b-0", f"s{i}")]) for i in range(50)]
    await asyncio.wait_for(asyncio.gather(work(a, "a"), work(b, "b"), *singles), 60)
    clock.advance(31)
    await asyncio.wait_for(asyncio.gather(a.purge_expired(), b.purge_expired()), 30)
    truth = await _truth(pg_dsn)
    assert truth[0] == 2 * 15 * (40 - 10 - 1) + 100  # a quarter expired, one retracted per round
    assert await _counted(a) == truth
    assert await _counted(b) == truth


async def _writer_pid(conn: Any) -> int:
    """The backend of the one store's writer open on this database."""
    return int(
        await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'diagnoxix-writer'"
            " AND datname = current_database()"
        )
    )


async def test_a_writer_never_waits_for_a_counter_another_transaction_holds(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.open()
    other = await asyncpg.connect(pg_dsn)
    try:
        # Another process's open transaction holds exactly the counter this writer prefers.
        preferred = await _writer_pid(other) % 32
        tx = other.transaction()
        await tx.start()
        await other.execute("UPDATE notification_counts SET stored = stored + 0 WHERE slot = $1", preferred)
        # Its writes go on, counted in another row.
        await asyncio.wait_for(store.insert_notifications([_draft(), _draft()]), 5)
        store.record_deliveries(
            [(n.id, n.user_id) for n in await store.history("u1", before_seq=None, limit=1)], []
        )
        await asyncio.wait_for(store.flush(), 5)
        await tx.rollback()
        assert await _exact(store, pg_dsn) == (2, 1)
        slots = await other.fetch("SELECT slot FROM notification_counts WHERE stored <> 0 OR delivered <> 0")
        assert preferred not in {r[0] for r in slots}
    finally:
        await other.close()
        await store.close()


async def test_when_every_counter_is_held_a_writer_waits_for_its_own(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.open()
    other = await asyncpg.connect(pg_dsn)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT * FROM notification_counts FOR UPDATE")
        insert = asyncio.ensure_future(store.insert_notifications([_draft()]))
        await asyncio.sleep(0.3)
        assert not insert.done()
        await tx.commit()
        (note,) = await asyncio.wait_for(insert, 5)
        assert note.seq == 1
        assert await _exact(store, pg_dsn) == (1, 0)
    finally:
        await other.close()
        await store.close()


async def test_the_migration_counts_the_rows_a_database_already_holds(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    dsn = pg_cluster.dsn(name)
    try:
        # A database at the schema before the counters, with rows in it.
        before = tmp_path / "migrations"
        before.mkdir()
        for path in sorted(MIGRATIONS_DIR.glob("*.sql"))[:3]:
            shutil.copy(path, before / path.name)
        conn = await asyncpg.connect(dsn)
        try:
            assert await migrate(conn, before) == 3
            await conn.execute(
                "INSERT INTO notifications (seq, id, user_id, type, title, message, priority, created_at,"
                " delivered_at) SELECT n, 'id-' || n, 'u' || n % 9, 'custom', 't', 'm', 'normal',"
                " '2026-01-01T00:00:00.000Z', CASE WHEN n % 3 = 0 THEN '2026-01-01T00:00:01.000Z' END"
                " FROM generate_series(1, 5000) AS n"
            )
            await conn.execute("UPDATE seq_counter SET last = 5000")
        finally:
            await conn.close()
        assert await _truth(dsn) == (5000, 1666)
        store = PgStore(dsn)
        await store.open()  # migrates to the latest
        try:
            assert (await store.counts()).stored == 5000
            assert await _exact(store, dsn) == (5000, 1666)
            notes = await store.insert_notifications([_draft("u1"), _draft("u2")])
            await store.acknowledge("u1", [notes[0].id])
            assert await _exact(store, dsn) == (5002, 1667)
        finally:
            await store.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
