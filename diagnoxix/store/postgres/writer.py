"""The one writer of a process on PostgreSQL: every write of this process, batched (group
commit): what is queued at once goes in two transactions, the writes that take seqs first, then
the others (marks, bookkeeping, keys), which need no lock.

Seqs across processes. The transaction that takes seqs (notifications, corrections) first takes one
session advisory lock, shared by every process of the deployment, reads the counter, commits,
runs its after-commit callbacks (they hand the notifications to the broker), awaits the barrier
(the broker has accepted them), and only then unlocks. So the next seq any process commits is
both visible and published after this one: a reader never sees seq n+1 without n, and every hub
hears the events in seq order, and the lock is held only for writes that need it.

A batch whose transaction fails is run again write by write, each in its own transaction, so a
refused write (a constraint, a text PostgreSQL cannot store) fails alone. Writes are written to
be run twice (`access`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from diagnoxix.outages import Outage
from diagnoxix.store.postgres.access import Write
from diagnoxix.store.protocols import StoreClosed, StoreError, StoreUnavailable
from diagnoxix.tally import Buckets

log = logging.getLogger("diagnoxix.store")

# The advisory lock every process takes to hand out seqs (an arbitrary 64-bit constant).
SEQ_LOCK = 0x6469_6167_6E6F_7378 & 0x7FFF_FFFF_FFFF_FFFF
# One transaction holds at most this many queued writes.
MAX_OPS_PER_BATCH = 5000

# Seconds to wait for the database to accept a connection before saying it does not answer.
# What the driver raises when the database or the connection fails: a connection reset, a
# refusal, a protocol state asyncpg gives up on (InternalClientError, e.g. on a session the
# server ended mid-statement). Each becomes a StoreError, never a traceback.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
CONNECT_TIMEOUT = 10.0
# The longest a batch waits for the seq lock (another process stalled holding it): then its
# writers hear StoreError (503) rather than wait forever.
LOCK_TIMEOUT_MS = 10_000
# The longest any one statement of the writer may take, the seq lock's wait included: past it the
# database is taken to be gone (stopped, or behind a network that drops everything), the
# connection is dropped, and the batch's writers hear StoreError (503) rather than wait forever.
# A COMMIT that times out may still have committed: a sender retrying with the same
# Idempotency-Key never stores twice.
STATEMENT_TIMEOUT = LOCK_TIMEOUT_MS / 1000 + 5.0
# The database ends the writer's session (and so frees the seq lock it may hold) within about
# 20 s of this process vanishing behind a broken network: TCP keepalives on the server's side
# while nothing is in flight, and a limit on unacknowledged data while something is.
_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "20000",
}
# The longest a commit waits for the broker to accept its events before letting the next writer
# go (the broker then counts them lost: clients recover them by resume).
BARRIER_TIMEOUT = 5.0

Barrier = Callable[[], Awaitable[None]]


class _NoConnection(StoreUnavailable):
    """The writer has no connection and could not make one: its whole batch fails at once."""


@dataclass(slots=True)
class _Op:
    work: Write[Any]
    sequenced: bool
    future: asyncio.Future[Any] | None


# Upper bounds of the metrics' histograms (as the SQLite writer's): writes per transaction, and
# seconds from a batch's start to its commit (network round trips included).
BATCH_SIZE_BOUNDS = (1, 2, 5, 10, 50, 100, 500, 1000, 5000)
COMMIT_SECONDS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass(slots=True)
class WriterStats:
    """This process's transactions: committed, failed, and their shape (for `/metrics`)."""

    commits: int = 0
    failures: int = 0
    batch_sizes: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BOUNDS))
    commit_seconds: Buckets = field(default_factory=lambda: Buckets(COMMIT_SECONDS_BOUNDS))


class _Tx:
    """`access.WriteTx` for one write of a batch."""

    __slots__ = ("_batch", "_sequenced", "conn")

    def __init__(self, batch: _BatchState, conn: Any, sequenced: bool) -> None:
        self._batch = batch
        self.conn = conn
        self._sequenced = sequenced

    def take_seqs(self, count: int) -> int:
        if not self._sequenced:
            raise RuntimeError("seqs are only handed out to writes submitted with sequenced=True")
        first = self._batch.next_seq
        self._batch.next_seq += count
        return first

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._batch.callbacks.append(callback)


@dataclass(slots=True)
class _BatchState:
    next_seq: int = 0
    callbacks: list[Callable[[], None]] = field(default_factory=list)


class PgWriter:
    """Runs submitted writes on its own connection, batch after batch."""

    def __init__(self, dsn: str, *, barrier: Callable[[], Barrier | None]) -> None:
        self._dsn = dsn
        # What to await after a sequenced commit's callbacks, before unlocking (the broker's drain).
        self._barrier = barrier
        self._queue: list[_Op] = []
        self._wake = asyncio.Event()
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.stats = WriterStats()
        # One warning when the database stops answering, one line when it answers again.
        self.outage = Outage(log, "store.database")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._run(), name="diagnoxix-pg-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def submit(self, work: Write[Any], *, sequenced: bool, future: asyncio.Future[Any] | None) -> None:
        if self._stopping or not self.running:
            if future is None:
                return
            raise StoreClosed("the store is closed")
        self._queue.append(_Op(work, sequenced, future))
        self._wake.set()

    async def flush(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def nothing(_tx: Any) -> None:
            return None

        self.submit(nothing, sequenced=False, future=future)
        await future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            ops, self._queue = self._queue[:MAX_OPS_PER_BATCH], self._queue[MAX_OPS_PER_BATCH:]
            # Two transactions: the writes that take seqs, under the lock every process waits
            # for, then the rest (marks, bookkeeping, keys) without it. Writes queued together
            # never wait on one another, so only `flush` cares about their order, and it is
            # answered with the second.
            for group in ([op for op in ops if op.sequenced], [op for op in ops if not op.sequenced]):
                if not group:
                    continue
                try:
                    await self._batch(group)
                except Exception:  # never leave the writer dead: fail what is waiting and go on
                    log.exception("store.writer_failed")
                    for op in group:
                        _settle(op, exc=StoreError("the write failed"))

    async def _batch(self, ops: list[_Op]) -> None:
        began = time.perf_counter()
        try:
            results = await self._transaction(ops)
        except Exception as exc:
            conn = self._conn
            if isinstance(exc, TimeoutError):
                # The database stopped answering: no new connection now (it would wait as long
                # again); the next batch makes one.
                self._drop()
            elif not isinstance(exc, StoreError | ValueError) and (
                not isinstance(exc, asyncpg.PostgresError) or conn is None or conn.is_closed()
            ):
                # The connection failed (closed, reset, left mid-protocol, ended by a restarting
                # server): start a new one.
                await self._reconnect()
            if isinstance(exc, _NoConnection | asyncpg.LockNotAvailableError) or self._conn is None:
                # Nothing to retry write by write: the database does not answer, or the seq lock
                # stayed taken (another process stalled holding it). Every writer hears it at once
                # (503) instead of one more wait each.
                self.stats.failures += 1
                self.outage.failed(exc)
                for op in ops:
                    _settle(op, exc=StoreUnavailable("the database is not answering"), outage=True)
                return
            if len(ops) == 1:
                if not isinstance(exc, StoreError | ValueError):
                    self.stats.failures += 1
                    log.warning("store.write_failed", extra={"error": type(exc).__name__})
                _settle(ops[0], exc=_translate(exc))
                return
            # Each write alone: the one refused (by the database, or by itself) fails, the others
            # commit.
            for op in ops:
                await self._batch([op])
            return
        self.outage.recovered()
        self.stats.commits += 1
        self.stats.batch_sizes.observe(len(ops))
        self.stats.commit_seconds.observe(time.perf_counter() - began)
        for op, result in zip(ops, results, strict=True):
            _settle(op, result=result)

    async def _transaction(self, ops: list[_Op]) -> list[Any]:
        conn = self._conn
        if conn is None or conn.is_closed():
            await self._reconnect()
            conn = self._conn
            if conn is None:
                raise _NoConnection("the database is not answering")
        sequenced = any(op.sequenced for op in ops)
        state = _BatchState()
        locked = False
        try:
            if sequenced:
                await conn.execute("SELECT pg_advisory_lock($1)", SEQ_LOCK)
                locked = True
            tx = conn.transaction()
            await tx.start()
            try:
                if sequenced:
                    state.next_seq = int(await conn.fetchval("SELECT last FROM seq_counter")) + 1
                    first = state.next_seq
                results = await _run_ops(ops, state, conn)
                if sequenced and state.next_seq != first:
                    await conn.execute("UPDATE seq_counter SET last = $1", state.next_seq - 1)
            except BaseException as exc:
                if not isinstance(exc, TimeoutError):  # a timeout drops the session (below)
                    await tx.rollback()
                raise
            await tx.commit()
            for callback in state.callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("store.listener_failed")
            if sequenced:
                barrier = self._barrier()
                if barrier is not None:
                    try:
                        await asyncio.wait_for(barrier(), BARRIER_TIMEOUT)
                    except Exception:
                        log.exception("store.barrier_failed")
        except TimeoutError:
            # A statement timed out: the database does not answer. A rollback or an unlock would
            # wait as long again; the session is dropped instead (the server rolls it back and
            # frees the seq lock).
            conn.terminate()
            raise
        finally:
            if locked and not conn.is_closed():
                # A closed connection's session lock died with it.
                try:
                    await conn.execute("SELECT pg_advisory_unlock($1)", SEQ_LOCK)
                except DRIVER_ERRORS:
                    # Its writes may have committed: never fail them for this. The session goes,
                    # and the lock with it; the next batch connects again.
                    conn.terminate()
        return results

    async def _connect(self) -> Any:
        return await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT,
            command_timeout=STATEMENT_TIMEOUT,
            server_settings={
                "lock_timeout": str(LOCK_TIMEOUT_MS),
                "application_name": "diagnoxix-writer",
                **_KEEPALIVES,
            },
        )

    def _drop(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()
        self._conn = None

    async def _reconnect(self) -> None:
        self._drop()
        try:
            self._conn = await self._connect()
        except DRIVER_ERRORS as exc:
            # The next batch tries again; its writers hear StoreError (503) meanwhile.
            self.outage.failed(exc, what="connect")


async def _run_ops(ops: list[_Op], state: _BatchState, conn: Any) -> list[Any]:
    """Each write in order; but writes that say how to run together (`run_together`, e.g.
    notification inserts) run first, as one statement for all of them, as SQLite's writer does."""
    results: list[Any] = [None] * len(ops)
    together: dict[Any, list[int]] = {}
    for index, op in enumerate(ops):
        runner = getattr(op.work, "run_together", None)
        if runner is not None:
            together.setdefault(runner, []).append(index)
    for runner, indexes in together.items():
        outcomes = await runner(_Tx(state, conn, True), [ops[i].work for i in indexes])
        for index, outcome in zip(indexes, outcomes, strict=True):
            results[index] = outcome
    grouped = {i for indexes in together.values() for i in indexes}
    for index, op in enumerate(ops):
        if index not in grouped:
            results[index] = await op.work(_Tx(state, conn, op.sequenced))
    return results


def _settle(op: _Op, *, result: Any = None, exc: BaseException | None = None, outage: bool = False) -> None:
    if op.future is None:
        if exc is not None:
            # While the database is gone the outage was logged once; a refused write is an error.
            log.log(
                logging.DEBUG if outage else logging.ERROR,
                "store.bookkeeping_failed",
                extra={"error": type(exc).__name__},
            )
        return
    if op.future.done():
        return
    if exc is not None:
        op.future.set_exception(exc)
    else:
        op.future.set_result(result)


def _translate(exc: BaseException) -> BaseException:
    """The database's errors as StoreErrors (they reach clients as 503, never as 500); what a
    write raised on purpose (a StoreError subclass, a ValueError) as it is."""
    if isinstance(exc, StoreError | ValueError):
        return exc
    return StoreError(f"the database refused the write ({type(exc).__name__})")
