"""The purge job also deletes the dashboard's bookkeeping once it is of no use: failed sign-ins
the throttle no longer counts, and staff sessions that expired or were signed out. Time is moved
with a ManualClock, never waited for."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.dashboard.accounts import LoginThrottle
from diagnoxix.dashboard.sessions import SESSION_LIFETIME
from diagnoxix.models import NotificationDraft
from diagnoxix.store.protocols import IdempotencyClaim
from diagnoxix.store.retention import (
    IDEMPOTENCY_KEPT,
    LOGIN_FAILURES_KEPT,
    STAFF_SESSIONS_KEPT,
    BookkeepingPurge,
    purge_bookkeeping,
    purge_forever,
)
from diagnoxix.store.sqlite.keys import IDEMPOTENCY_PURGE_SLICE
from diagnoxix.store.sqlite.staff import STAFF_PURGE_SLICE
from diagnoxix.store.sqlite.store import SqliteStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "housekeeping.sqlite3", synchronous="NORMAL", clock=clock)
    await opened.open()
    yield opened
    await opened.close()


def _rows(store: SqliteStore, table: str) -> int:
    with sqlite3.connect(store.path) as conn:
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(count)


async def _account(store: SqliteStore, username: str = "alice") -> None:
    assert await store.create_staff_account(username, "argon2-hash-not-checked-here", "admin")


def test_failures_are_kept_longer_than_the_throttle_counts_them() -> None:
    assert LoginThrottle().window < LOGIN_FAILURES_KEPT


async def test_failed_sign_ins_go_once_the_throttle_no_longer_counts_them(
    store: SqliteStore, clock: ManualClock
) -> None:
    start = clock.now()
    await store.record_login_failure("login:old")
    await store.record_login_failure("login-from:old")
    clock.advance(LOGIN_FAILURES_KEPT.total_seconds() - 60)
    await store.record_login_failure("login:recent")

    assert await purge_bookkeeping(store) == BookkeepingPurge(0, 0)  # nothing old enough yet
    assert _rows(store, "login_failures") == 3

    clock.advance(61)
    purged = await purge_bookkeeping(store)

    assert purged.login_failures == 2
    assert _rows(store, "login_failures") == 1
    assert await store.count_login_failures("login:recent", start) == 1
    assert await store.count_login_failures("login:old", start) == 0


async def test_a_purge_keeps_every_failure_the_throttle_still_counts(store: SqliteStore) -> None:
    """On the system's clock, as served: five fresh failures still lock the account after a purge."""
    throttle = LoginThrottle()
    for _ in range(throttle.per_account):
        await store.record_login_failure("login:k")
    assert await throttle.is_locked(store, "login:k", "login-from:a")

    purged = await purge_bookkeeping(store)

    assert purged.login_failures == 0
    assert await throttle.is_locked(store, "login:k", "login-from:a")


async def test_ended_staff_sessions_go_a_while_after_they_ended(
    store: SqliteStore, clock: ManualClock
) -> None:
    await _account(store)
    start = clock.now()
    await store.create_staff_session("signed-out", "alice", start + SESSION_LIFETIME)
    await store.create_staff_session("expires", "alice", start + SESSION_LIFETIME)
    await store.create_staff_session("live", "alice", start + SESSION_LIFETIME + STAFF_SESSIONS_KEPT * 2)
    clock.advance(60)
    assert await store.revoke_staff_session("signed-out")

    clock.advance(STAFF_SESSIONS_KEPT.total_seconds())
    purged = await purge_bookkeeping(store)

    assert purged.staff_sessions == 1
    assert await store.find_staff_session("signed-out") is None
    assert await store.find_staff_session("expires") is not None

    clock.advance(SESSION_LIFETIME.total_seconds())
    purged = await purge_bookkeeping(store)

    assert purged.staff_sessions == 1
    assert await store.find_staff_session("expires") is None
    # Still live (it expires later): never deleted, whatever its age.
    live = await store.find_staff_session("live")
    assert live is not None
    assert live.revoked_at is None


async def test_the_purge_deletes_in_slices(store: SqliteStore, clock: ManualClock) -> None:
    count = STAFF_PURGE_SLICE * 2 + 5
    # Concurrently, so the writer commits them in a few batches.
    await asyncio.gather(*(store.record_login_failure(f"login:{i % 7}") for i in range(count)))
    clock.advance(LOGIN_FAILURES_KEPT.total_seconds())

    assert await store.purge_login_failures(LOGIN_FAILURES_KEPT) == STAFF_PURGE_SLICE
    assert _rows(store, "login_failures") == count - STAFF_PURGE_SLICE
    assert (await purge_bookkeeping(store)).login_failures == count - STAFF_PURGE_SLICE
    assert _rows(store, "login_failures") == 0
    assert await store.purge_login_failures(LOGIN_FAILURES_KEPT) == 0


async def test_the_purge_job_runs_the_housekeeping(
    store: SqliteStore, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's own loop (started by the app with `DIAGNOXIX_PURGE_INTERVAL`) does it."""
    await _account(store)
    await store.record_login_failure("login:x")
    await store.create_staff_session("ended", "alice", clock.now() + timedelta(seconds=1))
    clock.advance((STAFF_SESSIONS_KEPT + timedelta(seconds=2)).total_seconds())

    caplog.set_level(logging.INFO, logger="diagnoxix.retention")
    job = asyncio.create_task(purge_forever(store, interval=3600))
    try:
        async with asyncio.timeout(5):
            # The log line comes once both purges have returned (the rows are gone a moment before).
            while not any(r.getMessage() == "retention.bookkeeping_purged" for r in caplog.records):
                await asyncio.sleep(0.01)
    finally:
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
    assert not _rows(store, "login_failures")
    assert not _rows(store, "staff_sessions")
    (event,) = [r for r in caplog.records if r.getMessage() == "retention.bookkeeping_purged"]
    assert (event.login_failures, event.staff_sessions) == (1, 1)  # type: ignore[attr-defined]


async def test_idempotency_records_go_after_a_day_in_slices_and_a_retry_is_then_new(
    store: SqliteStore, clock: ManualClock
) -> None:
    count = IDEMPOTENCY_PURGE_SLICE + 500

    def draft(i: int) -> NotificationDraft:
        return NotificationDraft(user_id="u", type="t", title=f"n{i}", message="m", data={})

    def claim(i: int) -> IdempotencyClaim:
        return IdempotencyClaim("key-1", f"retry-{i}", "hash", 201)

    await asyncio.gather(*(store.insert_notifications([draft(i)], claim(i)) for i in range(count)))
    clock.advance(3600)
    await store.insert_notifications([draft(count)], claim(count))  # younger: kept
    assert _rows(store, "idempotency_keys") == count + 1

    clock.advance(IDEMPOTENCY_KEPT.total_seconds() - 1800)
    first = await store.purge_idempotency_records(IDEMPOTENCY_KEPT)
    assert first == IDEMPOTENCY_PURGE_SLICE
    purged = await purge_bookkeeping(store)
    assert purged.idempotency_records == 500
    assert _rows(store, "idempotency_keys") == 1
    # The key of a purged record can be used again: a new request, stored anew.
    (again,) = await store.insert_notifications([draft(0)], claim(0))
    assert again.title == "n0"


async def test_the_idempotency_purge_reads_by_the_age_index(store: SqliteStore) -> None:
    with sqlite3.connect(store.path) as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT rowid FROM idempotency_keys WHERE created_at <= ?"
                " ORDER BY created_at LIMIT 1000",
                ("2026-01-01T00:00:00.000Z",),
            )
        )
    assert "idempotency_keys_by_age" in plan
