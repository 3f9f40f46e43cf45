"""The PostgreSQL writer: batches, a refused write alone, and seqs across two stores on one
database (two processes' worth): committed, visible and published in seq order."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.models import Notification, NotificationDraft, format_timestamp
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.postgres.writer import LOCK_TIMEOUT_MS, SEQ_LOCK
from diagnoxix.store.protocols import StoreError


def _draft(user: str = "u1", title: str = "t") -> NotificationDraft:
    return NotificationDraft(
        user_id=user, type="custom", title=title, message="m", data={}, priority="normal"
    )


@pytest.fixture
async def two(pg_dsn: str) -> AsyncIterator[tuple[PgStore, PgStore]]:
    first, second = PgStore(pg_dsn), PgStore(pg_dsn)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


async def _rows(store: PgStore) -> dict[str, tuple[int, str]]:
    rows = await store._fetch("SELECT id, seq, created_at FROM notifications")
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_inserts_of_one_batch_keep_their_own_created_at(pg_dsn: str) -> None:
    clock = ManualClock()
    store = PgStore(pg_dsn, clock=clock)
    await store.open()
    try:
        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(store.insert_notifications([_draft(title=f"n{i}")])))
            await asyncio.sleep(0)  # staged now, at this clock reading
            clock.advance(0.25)
        notes = [n for batch in await asyncio.gather(*tasks) for n in batch]
        rows = await _rows(store)
        assert len({n.created_at for n in notes}) == 4
        for note in notes:
            assert rows[note.id] == (note.seq, format_timestamp(note.created_at))
        assert (await store.counts()).commits < 4
    finally:
        await store.close()


async def test_a_write_the_database_refuses_fails_alone(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.open()
    try:
        # PostgreSQL text cannot hold NUL: that insert is refused, the rest of its batch commits.
        results = await asyncio.gather(
            store.insert_notifications([_draft(title="before")]),
            store.insert_notifications([_draft(title="bad\x00title")]),
            store.insert_notifications([_draft(title="after")]),
            return_exceptions=True,
        )
        assert isinstance(results[1], StoreError)
        good = [r for r in results if isinstance(r, list)]
        assert len(good) == 2
        rows = await _rows(store)
        assert sorted(rows) == sorted(n.id for batch in good for n in batch)
        # Seqs stay gapless for what committed, and the writer goes on.
        (later,) = await store.insert_notifications([_draft()])
        assert later.seq == 3
    finally:
        await store.close()


def _listen(own: list[int], published: list[int], notes: Sequence[Notification]) -> None:
    own.extend(n.seq for n in notes)
    published.extend(n.seq for n in notes)


async def test_two_stores_commit_and_publish_in_one_seq_order(two: tuple[PgStore, PgStore]) -> None:
    first, second = two
    published: list[int] = []

    async def barrier() -> None:
        # A broker's drain: what the commit handed over is accepted before the lock is let go.
        await asyncio.sleep(0)

    heard: dict[str, list[int]] = {"first": [], "second": []}
    for name, store in (("first", first), ("second", second)):
        store.set_commit_barrier(barrier)

        store.add_commit_listener(functools.partial(_listen, heard[name], published))

    async def send(store: PgStore, count: int) -> None:
        for start in range(0, count, 10):
            await asyncio.gather(
                *(store.insert_notifications([_draft(title=f"{start + i}")]) for i in range(10))
            )

    await asyncio.gather(send(first, 200), send(second, 200))
    assert sorted(heard["first"] + heard["second"]) == list(range(1, 401))
    assert heard["first"] == sorted(heard["first"])
    assert heard["second"] == sorted(heard["second"])
    # Across both: each commit was published before the next one (of either store) committed.
    assert published == list(range(1, 401))
    assert await first.last_seq() == await second.last_seq() == 400


async def test_a_reader_never_sees_a_later_seq_before_an_earlier_one(two: tuple[PgStore, PgStore]) -> None:
    first, second = two
    stop = asyncio.Event()
    gaps: list[tuple[int, ...]] = []

    async def read() -> None:
        while not stop.is_set():
            rows = await first._fetch("SELECT seq FROM notifications ORDER BY seq")
            seqs = tuple(r[0] for r in rows)
            if seqs != tuple(range(1, len(seqs) + 1)):
                gaps.append(seqs)
            await asyncio.sleep(0)

    async def send(store: PgStore) -> None:
        for _ in range(30):
            await asyncio.gather(*(store.insert_notifications([_draft()]) for _ in range(5)))

    reader = asyncio.create_task(read())
    await asyncio.gather(send(first), send(second))
    stop.set()
    await reader
    assert gaps == []


async def test_writes_wait_for_the_database_and_fail_cleanly_when_it_is_gone(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.open()
    try:
        # Another session ends the writer's connection: the next write reconnects.
        await store._fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        outcome: Any
        try:
            outcome = await store.insert_notifications([_draft()])
        except StoreError as exc:
            outcome = exc
        # Either refused with a StoreError (503 for a client) or stored; never anything else.
        (note,) = await store.insert_notifications([_draft()])
        assert note.seq >= 1
        assert isinstance(outcome, list | StoreError)
    finally:
        await store.close()


async def test_a_seq_lock_held_elsewhere_fails_the_whole_batch_at_once(pg_dsn: str) -> None:
    """Another process stalled holding the seq lock: the sends waiting behind it fail together
    after the lock timeout (503), not one lock timeout after another; once it is free, they go."""
    store = PgStore(pg_dsn)
    await store.open()
    holder = await asyncpg.connect(pg_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", SEQ_LOCK)
        started = time.monotonic()
        # A batch of three (queued together) behind the one that is waiting already.
        first = asyncio.ensure_future(store.insert_notifications([_draft(title="first")]))
        await asyncio.sleep(0.2)
        rest = [store.insert_notifications([_draft(title=f"then {i}")]) for i in range(3)]
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        assert all(isinstance(o, StoreError) for o in outcomes), outcomes
        # Two lock timeouts (the first batch, then the other three together), not four.
        assert time.monotonic() - started < 2.5 * LOCK_TIMEOUT_MS / 1000
        await holder.execute("SELECT pg_advisory_unlock($1)", SEQ_LOCK)
        (note,) = await store.insert_notifications([_draft(title="after")])
        assert note.seq >= 1
    finally:
        await holder.close()
        await store.close()
