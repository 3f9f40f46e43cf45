"""Critical results and messaging on PostgreSQL only: two `PgStore`s on one database are two
processes of one deployment. What one process could never get wrong: two acknowledging the same
item at once, a step finished while its item is acknowledged, an item opened twice, an action
answered twice; and the migration's triggers themselves."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.store.correction_records import Correction
from diagnoxix.store.critical_records import Acknowledgement, CriticalItemExists
from diagnoxix.store.messaging_records import StoredTemplate
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.protocols import IdempotencyConflict

from .critical_support import open_item, send_step
from .pg_server import PgCluster

ITEMS = 40


@pytest.fixture
async def stores(pg_dsn: str) -> AsyncIterator[tuple[PgStore, PgStore]]:
    clock = ManualClock()
    one, two = PgStore(pg_dsn, clock=clock), PgStore(pg_dsn, clock=clock)
    await one.open()
    await two.open()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def _rows(dsn: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_two_processes_acknowledging_the_same_items_at_once_close_each_once(
    stores: tuple[PgStore, PgStore], pg_dsn: str
) -> None:
    one, two = stores
    heard: dict[str, list[Correction]] = {"one": [], "two": []}
    one.add_correction_listener(heard["one"].append)
    two.add_correction_listener(heard["two"].append)
    for i in range(ITEMS):
        await open_item(one, f"item-{i}", target="group:ward", steps=[60])
        await send_step(two, f"item-{i}", 0, [f"a{i}", f"b{i}"])
    before = await one.last_seq()
    results = await asyncio.gather(
        *(
            store.acknowledge_critical(f"item-{i}", Acknowledgement(who, "http"))
            for i in range(ITEMS)
            for store, who in ((one, f"a{i}"), (two, f"b{i}"))
        )
    )
    for i in range(ITEMS):
        pair = results[2 * i : 2 * i + 2]
        assert sorted(r.outcome for r in pair) == ["already", "done"], i
        (won,) = [r for r in pair if r.outcome == "done"]
        # Both callers are told who won.
        assert {r.item.acknowledged_by for r in pair if r.item} == {won.item and won.item.acknowledged_by}
        assert len(won.corrections) == 2
    # One `acknowledged` correction per copy, each with a seq of its own, none lost nor doubled.
    rows = await _rows(pg_dsn, "SELECT seq, notification_id FROM corrections WHERE kind = 'acknowledged'")
    assert len(rows) == 2 * ITEMS
    assert sorted(r[0] for r in rows) == list(range(before + 1, before + 2 * ITEMS + 1))
    assert len({r[1] for r in rows}) == 2 * ITEMS
    assert await one.last_seq() == before + 2 * ITEMS
    # Each process heard its own, in seq order; together, all of them.
    for own in heard.values():
        assert [c.seq for c in own] == sorted(c.seq for c in own)
    assert sorted(c.seq for own in heard.values() for c in own) == [r for r in sorted(r[0] for r in rows)]
    events = await _rows(pg_dsn, "SELECT count(*) FROM critical_events WHERE event = 'acknowledged'")
    assert events[0][0] == ITEMS
    # Every pending step was cancelled with its item.
    pending = await _rows(pg_dsn, "SELECT count(*) FROM timers WHERE state = 'pending'")
    assert pending[0][0] == 0


async def test_a_step_finished_while_its_item_is_acknowledged_elsewhere_happens_or_not(
    stores: tuple[PgStore, PgStore], pg_dsn: str
) -> None:
    one, two = stores
    for i in range(ITEMS):
        await open_item(one, f"item-{i}", steps=[60])
        await send_step(one, f"item-{i}", 0, ["u1"])
    jitter = random.Random(16)

    async def finish(i: int, wait: float = 0.0) -> bool:
        await asyncio.sleep(wait)
        try:
            await two.finish_critical_step(f"item-{i}.1", [])
        except IdempotencyConflict:
            return False
        return True

    async def acknowledge(i: int, wait: float = 0.0) -> str:
        await asyncio.sleep(wait)
        return (await one.acknowledge_critical(f"item-{i}", Acknowledgement("u1", "socket"))).outcome

    # One process acknowledges first: the other's step never runs. The other way round: the
    # step ran, and the acknowledgement has nothing left to cancel.
    assert await acknowledge(0) == "done"
    assert await finish(0) is False
    assert await finish(1) is True
    assert await acknowledge(1) == "done"
    # At once, in either order.
    raced = range(2, ITEMS)
    finishing = asyncio.gather(*(finish(i, jitter.uniform(0, 0.03)) for i in raced))
    acks = await asyncio.gather(*(acknowledge(i, jitter.uniform(0, 0.03)) for i in raced))
    finished = [False, True, *await finishing]
    assert set(acks) == {"done"}
    rows = await _rows(pg_dsn, "SELECT id, state FROM timers WHERE id LIKE 'item-%.1'")
    states = {r[0]: r[1] for r in rows}
    # A step either ran (done) or was cancelled by the acknowledgement, never both, never neither.
    assert [states[f"item-{i}.1"] for i in range(ITEMS)] == ["done" if f else "cancelled" for f in finished]


async def test_an_item_opened_by_two_processes_at_once_is_stored_once(
    stores: tuple[PgStore, PgStore], pg_dsn: str
) -> None:
    one, two = stores
    results = await asyncio.gather(
        *(open_item(s, f"item-{i}", steps=[60]) for i in range(ITEMS) for s in (one, two)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, CriticalItemExists) for r in results) == ITEMS
    assert sum(not isinstance(r, BaseException) for r in results) == ITEMS
    counts = await _rows(
        pg_dsn,
        "SELECT (SELECT count(*) FROM timers), (SELECT count(*) FROM critical_events WHERE event = 'opened')",
    )
    assert tuple(counts[0]) == (2 * ITEMS, ITEMS)
    # Two processes running the same scheduled send's job: one opens its item.
    claimed = await asyncio.gather(
        open_item(one, "sched-a", claim_timer="job-1"),
        open_item(two, "sched-b", claim_timer="job-1"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in claimed) == ["CriticalItem", "IdempotencyConflict"]


async def test_an_action_answered_in_two_processes_at_once_is_recorded_once(
    stores: tuple[PgStore, PgStore],
) -> None:
    one, two = stores
    results = await asyncio.gather(
        *(
            s.record_action_answer(f"n-{i}", "u1", a)
            for i in range(ITEMS)
            for s, a in ((one, "yes"), (two, "no"))
        )
    )
    for i in range(ITEMS):
        pair = results[2 * i : 2 * i + 2]
        assert sorted(r.recorded for r in pair) == [False, True]
        assert pair[0].action == pair[1].action


async def test_the_triggers_record_deliveries_and_keep_the_timeline_append_only(
    stores: tuple[PgStore, PgStore], pg_dsn: str
) -> None:
    one, _ = stores
    await open_item(one, "item-t", target="group:ward")
    copies = await send_step(one, "item-t", 0, ["u1", "u2"])
    conn = await asyncpg.connect(pg_dsn)
    try:
        stamp = "2030-01-01T00:00:00.000Z"
        # Written to a plain client, or acknowledged by a v1 one: once, whatever comes after.
        delivered = "SELECT count(*) FROM critical_events WHERE event = 'delivered'"
        await conn.execute("UPDATE notifications SET delivered_at = $1 WHERE id = $2", stamp, copies[1].id)
        assert await conn.fetchval(delivered) == 1
        await conn.execute("UPDATE notifications SET delivered_at = $1 WHERE id = $2", stamp, copies[1].id)
        await conn.execute("UPDATE notifications SET read_at = $1", stamp)
        for sql in ("UPDATE critical_events SET event = 'x'", "DELETE FROM critical_events"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(sql)
    finally:
        await conn.close()
    timeline = await one.critical_timeline("item-t")
    assert [(e.event, e.user_id, e.step) for e in timeline] == [
        ("opened", None, None),
        ("sent", "u1", 0),
        ("sent", "u2", 0),
        ("delivered", "u2", 0),
    ]
    assert timeline[-1].at is not None
    assert timeline[-1].at.year == 2030
    assert [c.delivered_at is not None for c in await one.critical_copies("item-t")] == [False, True]


@pytest.fixture
async def icu_dsn(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A database whose default collation is ICU's English one (case folded, punctuation last),
    as many deployments' are."""
    name = f"t_icu_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu"
            " ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    finally:
        await admin.close()
    try:
        yield pg_cluster.dsn(name)
    finally:
        pg_cluster.drop_database(name)


async def test_lists_order_text_as_sqlite_does_on_any_collation_and_by_their_index(icu_dsn: str) -> None:
    store = PgStore(icu_dsn, clock=ManualClock())
    await store.open()
    try:
        assert await store._fetchval("SELECT 'a' < 'B'") is True  # not byte order
        names = ["ward-b", "Ward-a", "ward_c", "ward-B"]
        in_bytes = sorted(names, key=lambda n: n.encode())
        for name in names:
            await store.put_group(name)
            await store.set_group_member("ward-b", name, True)
            await store.save_template(StoredTemplate(name, "en", "t", "m", store._clock.now(), "admin"))
            await store.save_template(StoredTemplate("lab", name, "t", "m", store._clock.now(), "admin"))
            await open_item(store, name)
        assert [g.name for g in await store.list_groups()] == in_bytes
        assert [m.user_id for m in await store.group_members("ward-b") or []] == in_bytes
        templates = [(t.type, t.locale) for t in await store.list_templates()]
        assert templates == sorted(
            [(n, "en") for n in names] + [("lab", n) for n in names],
            key=lambda t: (t[0].encode(), t[1].encode()),
        )
        newest = in_bytes[::-1]
        assert [i.id for i in await store.critical_items(open_only=False, limit=10)] == newest
        assert [i.id for i in await store.critical_items(open_only=True, limit=10)] == newest
        # The lists read their index in its order, without sorting the table.
        for where, index in (("", "critical_items_recent"), ("WHERE state = 'open'", "critical_items_open")):
            plan = await _plan(
                icu_dsn,
                f'SELECT id FROM critical_items {where} ORDER BY created_at COLLATE "C" DESC,'
                ' id COLLATE "C" DESC LIMIT 50',
            )
            assert index in plan
            assert "Sort" not in plan
    finally:
        await store.close()


async def _plan(dsn: str, sql: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        return "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}"))
    finally:
        await conn.close()
