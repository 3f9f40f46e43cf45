"""The PostgreSQL store: a pool for reads, one writer per process (`writer.PgWriter`), the same
protocols as the SQLite store (`store.protocols`), shared by every process of a deployment.

What a process knows only of its own commits (its writer's statistics for `/metrics`) is per
process; what every process must agree on (seqs, idempotency claims, timers, the stored and
delivered counts) is in the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg

from diagnoxix.clock import Clock, SystemClock
from diagnoxix.models import BROADCAST_RECIPIENT, Notification, StoreCounts, format_timestamp
from diagnoxix.store.key_cache import KeyCache
from diagnoxix.store.postgres.access import PgAccess, Write, WriteTx
from diagnoxix.store.postgres.key_revocations import RevocationListener
from diagnoxix.store.postgres.migrations import migrate
from diagnoxix.store.postgres.timers import TimerLeases
from diagnoxix.store.postgres.writer import CONNECT_TIMEOUT, DRIVER_ERRORS, Barrier, PgWriter
from diagnoxix.store.protocols import (
    CommitListener,
    Correction,
    CorrectionListener,
    MarkListener,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger("diagnoxix.store")
T = TypeVar("T")

# Purging deletes in slices so one purge never holds locks for long.
PURGE_SLICE = 1000
# Reads share a small pool: the event loop is the limit long before PostgreSQL is.
POOL_MIN, POOL_MAX = 1, 8
# The longest a read may take before the database is taken not to answer (a 503): a stopped
# database, or one behind a network that drops everything, must not hold requests forever.
READ_TIMEOUT = 10.0
# The stored and delivered counts are read again at most this often (seconds), unless this
# process committed since.
COUNT_SECONDS = 1.0
# The counts: the sums of the counters the database keeps as notifications change (migration
# `0004_counts`), never a scan of the table.
_COUNTS = "SELECT coalesce(sum(stored), 0), coalesce(sum(delivered), 0) FROM notification_counts"
# A seq beyond any real one: the upper bound of a read that names none. Another process may have
# committed more than this one has heard of, so the database's own view is the bound.
NO_BOUND = 2**62
# A device whose token expired more than this long ago can never connect again (the SQLite
# store's margin too): its row goes with the purge.
DEVICE_EXPIRY_MARGIN_SECONDS = 60


class PgCore(PgAccess):
    """Lifecycle, the writer, notifications' purge, meta. The query mixins (`PgStore`) add the
    rest of the protocols, notifications' insert among them (`inserts.PgInserts`)."""

    def __init__(self, dsn: str, *, clock: Clock | None = None, leases: TimerLeases | None = None) -> None:
        """`leases`: how long a job taken by `due_timers` is held from every other process
        (`timers.TimerLeases`, from the settings; the shortest lease by default)."""
        self._dsn = dsn
        self._clock = clock or SystemClock()
        self._leases = leases or TimerLeases()
        self._pool: Any = None
        self._writer: PgWriter | None = None
        self._barrier: Barrier | None = None
        self._commit_listeners: list[CommitListener] = []
        self._mark_listeners: list[MarkListener] = []
        self._correction_listeners: list[CorrectionListener] = []
        self._epoch = ""
        # (when, stored, delivered, this process's commits then): the last count (`counts`).
        self._counted: tuple[float, int, int, int] | None = None
        self._closing = False
        self._revocations = RevocationListener(dsn)
        self._key_cache = KeyCache(self._revocations)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Raises StoreError, with a message an operator can act on, when the database cannot be used."""
        try:
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            try:
                await migrate(conn)
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=POOL_MIN,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT,
                command_timeout=READ_TIMEOUT,
            )
            self._writer = PgWriter(self._dsn, barrier=lambda: self._barrier)
            await self._writer.start()
            self._epoch = await self.get_or_create_meta("epoch", lambda: uuid.uuid4().hex)
        except DRIVER_ERRORS as exc:
            await self.close()
            raise StoreError(f"cannot open the PostgreSQL database: {_reason(exc)}") from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close the pool."""
        if self._closing:
            return
        self._closing = True
        await self._revocations.aclose()
        self._key_cache.close()
        if self._writer is not None:
            await self._writer.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def set_commit_barrier(self, barrier: Barrier | None) -> None:
        """What a commit that took seqs awaits before the next one may commit, in any process
        (the broker's drain: every hub then hears the events in seq order)."""
        self._barrier = barrier

    # -- the access the mixins use -----------------------------------------------------------

    @property
    def _p(self) -> Any:
        if self._pool is None or self._closing:
            raise StoreClosed("the store is closed")
        return self._pool

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            # The whole read, the wait for a pooled connection included: a query that timed out
            # is cancelled on the server while the caller is answered.
            async with asyncio.timeout(READ_TIMEOUT):
                return list(await self._p.fetch(sql, *args))
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"the database is not answering ({type(exc).__name__})") from None

    async def _fetchrow(self, sql: str, *args: Any) -> Any | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        row = await self._fetchrow(sql, *args)
        return row[0] if row is not None else None

    @property
    def _w(self) -> PgWriter:
        if self._writer is None or self._closing:
            raise StoreClosed("the store is closed")
        return self._writer

    async def _write(self, work: Write[T], *, sequenced: bool = False) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._w.submit(work, sequenced=sequenced, future=future)
        return await future

    def _write_nowait(self, work: Write[Any]) -> None:
        if self._closing or self._writer is None:
            return
        self._writer.submit(work, sequenced=False, future=None)

    async def flush(self) -> None:
        await self._w.flush()

    def _now_stamp(self) -> str:
        return format_timestamp(self._clock.now())

    def _outlived(self) -> str:
        return format_timestamp(self._clock.now() - timedelta(seconds=DEVICE_EXPIRY_MARGIN_SECONDS))

    # -- properties ------------------------------------------------------------------------

    @property
    def max_seq(self) -> int:
        return NO_BOUND

    async def last_seq(self) -> int:
        return int(await self._fetchval("SELECT last FROM seq_counter"))

    @property
    def epoch(self) -> str:
        return self._epoch

    def undone_by_restore(self, seq: int) -> bool:
        # A PostgreSQL database is restored with PostgreSQL's own tools, which keep seq_counter.
        return False

    async def counts(self) -> StoreCounts:
        """Counted by the database as every process commits (its counters: a few rows summed,
        whatever the table's size); read again once this process committed since, else at most
        every COUNT_SECONDS (the dashboard and `/metrics` poll this)."""
        now = time.monotonic()
        writer = self._writer
        commits = writer.stats.commits if writer else 0
        counted = self._counted
        if counted is None or counted[3] != commits or now - counted[0] >= COUNT_SECONDS:
            row = await self._fetchrow(_COUNTS)
            assert row is not None
            counted = self._counted = (now, int(row[0]), int(row[1]), commits)
        _, stored, delivered, _ = counted
        return StoreCounts(
            stored=stored,
            delivered=delivered,
            commits=writer.stats.commits if writer else 0,
            commit_failures=writer.stats.failures if writer else 0,
            batch_sizes=writer.stats.batch_sizes.snapshot() if writer else None,
            commit_seconds=writer.stats.commit_seconds.snapshot() if writer else None,
        )

    async def check(self) -> None:
        if self._writer is None or not self._writer.running:
            raise StoreUnavailable("the writer is not running")
        await self._fetchval("SELECT 1")

    async def check_writable(self) -> None:
        stamp = self._now_stamp()

        async def probe(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('write_probe', $1)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                stamp,
            )

        await self._write(probe)

    async def get_or_create_meta(self, key: str, default: Callable[[], str]) -> str:
        value = default()

        async def put(tx: WriteTx) -> str:
            await tx.conn.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value
            )
            return str(await tx.conn.fetchval("SELECT value FROM meta WHERE key = $1", key))

        return await self._write(put)

    # -- listeners -------------------------------------------------------------------------

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._commit_listeners.append(listener)

    def add_mark_listener(self, listener: MarkListener) -> None:
        self._mark_listeners.append(listener)

    def add_correction_listener(self, listener: CorrectionListener) -> None:
        self._correction_listeners.append(listener)

    def _committed(self, notifications: list[Notification]) -> None:
        """Every listener hears of a commit, whatever another one did with it."""
        for listener in self._commit_listeners:
            try:
                listener(notifications)
            except Exception:
                log.exception("store.listener_failed")

    def _corrected(self, correction: Correction) -> None:
        """A correction committed (called in commit order, from its write's `after_commit`)."""
        for listener in self._correction_listeners:
            try:
                listener(correction)
            except Exception:
                log.exception("store.listener_failed")

    def _forget(self, deleted: int) -> None:
        """`deleted` notifications left the store (a retraction): the database's counters
        followed the delete itself."""

    # -- notifications ---------------------------------------------------------------------

    async def purge_expired(self) -> int:
        """Delete one slice of expired notifications; the per-recipient purge marks move in the
        same transaction, so a purged seq is always recorded."""
        now = self._now_stamp()
        top = await self._fetchval(
            "SELECT seq FROM notifications WHERE expires_at IS NOT NULL AND expires_at <= $1"
            f" ORDER BY seq LIMIT 1 OFFSET {PURGE_SLICE - 1}",
            now,
        )
        bound = int(top) if top is not None else NO_BOUND
        outlived = self._outlived()
        expired = "expires_at IS NOT NULL AND expires_at <= $1 AND seq <= $2"

        async def purge(tx: WriteTx) -> int:
            conn = tx.conn
            await conn.execute(
                "INSERT INTO purge_marks (user_id, purged_through) SELECT user_id, max(seq)"
                f" FROM notifications WHERE {expired} GROUP BY user_id"
                " ON CONFLICT (user_id) DO UPDATE SET purged_through ="
                " greatest(purge_marks.purged_through, excluded.purged_through)",
                now,
                bound,
            )
            await conn.execute(
                "DELETE FROM broadcast_receipts WHERE notification_id IN"
                f" (SELECT id FROM notifications WHERE user_id = $3 AND {expired})",
                now,
                bound,
                BROADCAST_RECIPIENT,
            )
            await conn.execute(
                "DELETE FROM action_answers WHERE notification_id IN"
                f" (SELECT id FROM notifications WHERE {expired})",
                now,
                bound,
            )
            await conn.execute("DELETE FROM devices WHERE expires_at <= $1", outlived)
            status = await conn.execute(f"DELETE FROM notifications WHERE {expired}", now, bound)
            return int(status.split()[-1])

        return await self._write(purge)


def _reason(exc: BaseException) -> str:
    """Why a connection failed, without the DSN (it may carry a password)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__ if not isinstance(exc, asyncpg.PostgresError) else str(exc).splitlines()[0]
