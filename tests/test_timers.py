"""Durable timers: jobs in the store, run by the scheduler exactly once, on the service's clock.

A real SQLite store in a temp dir and a `ManualClock`: time is moved, never waited for. The job
handlers here do what every handler must: store their notifications with the job's claim. What
every store must do with timers (and the scheduler over them) is in test_store_contract_timers.py,
on SQLite and PostgreSQL; here are the clocks, a restart of the SQLite store and its query plans.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from diagnoxix.clock import ManualClock, SystemClock
from diagnoxix.delivery.timers import Handler, TimerScheduler
from diagnoxix.models import NotificationDraft
from diagnoxix.store.protocols import timer_claim
from diagnoxix.store.retention import FINISHED_TIMERS_KEPT, purge_bookkeeping
from diagnoxix.store.sqlite.store import SqliteStore
from diagnoxix.store.timer_records import NewTimer, Timer

KIND = "test_send"
OWNER = "apikey:0123456789ab"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "timers.sqlite3", synchronous="NORMAL", clock=clock)
    await opened.open()
    yield opened
    await opened.close()


def _job(clock: ManualClock, seconds: float, user: str = "ana", key: str | None = None) -> NewTimer:
    payload = {"user_id": user, "content": {"title": "Due"}}
    return NewTimer(KIND, OWNER, clock.now() + timedelta(seconds=seconds), payload, key)


def _sender(store: SqliteStore) -> Handler:
    """A handler as a real one is written: the job's notification, stored with its claim."""

    async def send(job: Timer) -> None:
        title = job.payload["content"]["title"]
        draft = NotificationDraft(
            user_id=job.payload["user_id"], type="reminder", title=title, message="", data={}
        )
        await store.insert_notifications([draft], timer_claim(job.id))

    return send


def _count(store: SqliteStore, sql: str, *params: object) -> int:
    with sqlite3.connect(store.path) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _running(scheduler: TimerScheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_manual_clock_wakes_a_sleeper_when_advanced_to_its_deadline(clock: ManualClock) -> None:
    sleeper = asyncio.create_task(clock.sleep_until(clock.now() + timedelta(seconds=300)))
    await asyncio.sleep(0.01)
    clock.advance(299)
    await asyncio.sleep(0.01)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1)
    assert clock.sleepers == 0
    await asyncio.wait_for(clock.sleep_until(clock.now() - timedelta(seconds=1)), 1)  # past: at once


async def test_system_clock_sleeps_until_the_deadline() -> None:
    clock = SystemClock()
    deadline = clock.now() + timedelta(seconds=0.2)
    await asyncio.wait_for(clock.sleep_until(deadline), 2)
    assert clock.now() >= deadline


async def test_jobs_due_while_the_server_was_down_run_once_at_start(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "down.sqlite3"
    store = SqliteStore(path, synchronous="NORMAL", clock=clock)
    await store.open()
    jobs = await store.add_timers([_job(clock, 10 * i + 10, user=f"u{i}") for i in range(5)])
    await store.close()
    clock.advance(3600)  # down for an hour
    store = SqliteStore(path, synchronous="NORMAL", clock=clock)
    await store.open()
    try:
        scheduler = TimerScheduler(store, clock, {KIND: _sender(store)})
        async with _running(scheduler):
            await _until(lambda: _all_done(store, jobs))
        assert scheduler.ran == 5
        assert _count(store, "SELECT count(*) FROM notifications") == 5
        # Started again: nothing is due, nothing runs twice.
        assert await TimerScheduler(store, clock, {KIND: _sender(store)}).run_due() == 0
    finally:
        await store.close()


async def _all_done(store: SqliteStore, jobs: list[Timer]) -> bool:
    found = await store.get_timers(OWNER, [j.id for j in jobs])
    return all(j.state == "done" for j in found)


async def test_finished_jobs_are_purged_a_month_later_in_slices_and_pending_ones_never(
    store: SqliteStore, clock: ManualClock
) -> None:
    (sent,) = await store.add_timers([_job(clock, 1)])
    (cancelled,) = await store.add_timers([_job(clock, 1, key="appointment-9-reminder")])
    (pending,) = await store.add_timers([_job(clock, FINISHED_TIMERS_KEPT.total_seconds() * 3)])
    await _sender(store)(sent)
    assert await store.cancel_timer(OWNER, cancelled.id)
    clock.advance(FINISHED_TIMERS_KEPT.total_seconds() - 60)
    assert await store.purge_finished_timers(FINISHED_TIMERS_KEPT) == 0  # a month not yet over
    clock.advance(120)
    purged = await purge_bookkeeping(store)
    assert purged.finished_timers == 2
    assert _count(store, "SELECT count(*) FROM timers") == 1
    assert [t.id for t in await store.get_timers(OWNER, [pending.id])] == [pending.id]


async def test_the_finished_jobs_purge_reads_by_its_index(store: SqliteStore) -> None:
    with sqlite3.connect(store.path) as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT rowid FROM timers WHERE state != 'pending'"
                " AND finished_at <= ? ORDER BY finished_at LIMIT 1000",
                ("2026-01-01T00:00:00.000Z",),
            )
        )
    assert "timers_finished" in plan
