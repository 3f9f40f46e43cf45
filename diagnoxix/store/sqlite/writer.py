"""The single writer of the SQLite store: every write, batched into one transaction (group commit).

The writer task takes every write waiting at that moment and commits them together: each
notification is durable before its sender hears 2xx, yet a burst costs a handful of fsyncs rather
than one per notification. Listeners hear of committed notifications synchronously, in seq order,
right after the commit and before any sender is answered (save before send).

One thread owns the write connection (the standard library's `sqlite3`; aiosqlite would make
every statement its own round trip). A batch is queued to it in steps, without waiting for any but
the last: open the transaction, insert each chunk of notifications as the loop prepares it, then
bookkeeping and COMMIT. While the thread commits one batch the event loop prepares the next and,
once a commit returns, publishes it: at most one batch is being committed and one waits behind it,
always in order.

One write that the database refuses (an Idempotency-Key claimed twice, a draft it cannot store, a
constraint) fails alone and the rest of its batch still commits (see `store.sqlite.batch`). Only a
failed transaction (disk full, I/O error, another process holding the lock too long) fails the
whole batch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from diagnoxix.clock import Clock
from diagnoxix.json_encoding import encode_rows
from diagnoxix.models import Notification, NotificationDraft, format_timestamp
from diagnoxix.store.protocols import (
    IdempotencyClaim,
    IdempotencyConflict,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)
from diagnoxix.store.sqlite.batch import BatchDone, Opening, Query, Statement, Transaction
from diagnoxix.store.sqlite.ops import Bulk, Execute, Flush, Insert, Op, fail, fail_all, resolve, translate
from diagnoxix.store.sqlite.seqs import SeqCounter
from diagnoxix.store.sqlite.thread import CallThread
from diagnoxix.store.staging import InsertRows, Lifetimes, Staged, Stager, committed_notes
from diagnoxix.tally import Buckets

log = logging.getLogger("diagnoxix.store")

# One transaction holds at most this many queued writes, and takes no more inserts once it holds
# this many notifications (one larger insert still goes whole). Fewer, larger transactions store a
# burst fastest: each commit rewrites every index page its rows touched.
MAX_OPS_PER_BATCH = 20000
MAX_NOTIFICATIONS_PER_BATCH = 20000
# Within a transaction, notifications go to the writer thread in chunks of about this many, so it
# stores one chunk while the event loop prepares the next.
CHUNK_NOTIFICATIONS = 2000


# Upper bounds of the metrics' histograms: writes per transaction, and seconds from a batch's
# first statement to its commit (an fsync takes about a millisecond on an SSD).
BATCH_SIZE_BOUNDS = (1, 2, 5, 10, 50, 100, 500, 1000, 5000, 20000)
COMMIT_SECONDS_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass(slots=True)
class WriterStats:
    """Notifications stored (the store subtracts what it purges), transactions committed and
    failed, and the shape of the commits (for `/metrics`)."""

    stored: int = 0
    commits: int = 0
    failures: int = 0
    batch_sizes: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BOUNDS))
    commit_seconds: Buckets = field(default_factory=lambda: Buckets(COMMIT_SECONDS_BOUNDS))


@dataclass(slots=True)
class _Batch:
    ops: list[Op]
    staged: list[Staged]
    bulk_keys: list[tuple[str, Callable[[int], None] | None]]
    created_at: datetime
    stamp: str
    result: asyncio.Future[BatchDone]
    began: float
    # Notifications staged: the seqs this batch will take if none of its inserts is refused.
    notes_count: int = 0


class GroupCommitWriter:
    """Owns the write connection and its thread. Start it once, stop it once."""

    def __init__(
        self,
        path: Path,
        pragmas: Sequence[str],
        seqs: SeqCounter,
        *,
        on_notifications: Callable[[list[Notification]], None],
        clock: Clock,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._path = path
        self._clock = clock
        # Hears the notifications of every commit, in seq order, before their senders are answered.
        self._on_notifications = on_notifications
        # Told of every commit (the checkpointer: see `checkpoint`).
        self._on_commit = on_commit
        self._pragmas = list(pragmas)
        self.seqs = seqs
        self.stats = WriterStats()
        self._queue: asyncio.Queue[Op | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._thread = CallThread("diagnoxix-writer")
        # Touched only on the writer thread.
        self._conn: sqlite3.Connection | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    async def start(self) -> None:
        """Open the connection on the writer thread; if that fails, `stop()` still cleans up."""
        await self._thread.call(self._connect)
        self._task = asyncio.create_task(self._run(), name="diagnoxix-store-writer")

    async def stop(self) -> None:
        """Commit everything queued, then end the task, close the connection and the thread."""
        if self._stopping:
            return
        self._stopping = True
        try:
            if self._task is not None:
                self._queue.put_nowait(None)
                await self._task
        finally:
            # Queued behind whatever the thread still has; the thread ends once it is done.
            closed = self._thread.call(self._disconnect)
            self._thread.stop()
        await closed

    def submit(self, op: Op) -> None:
        if not self.running:
            raise StoreClosed("the store is closed")
        self._queue.put_nowait(op)

    async def insert(
        self,
        drafts: Sequence[NotificationDraft],
        idempotency: IdempotencyClaim | None,
        lifetimes: Lifetimes,
    ) -> list[Notification]:
        future: asyncio.Future[list[Notification]] = asyncio.get_running_loop().create_future()
        self.submit(Insert(drafts, idempotency, future, lifetimes))
        return await future

    async def execute(
        self,
        *statements: Statement,
        query: Query | None = None,
        on_commit: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> int:
        """Run statements atomically in the next batch and wait for the commit.

        Returns the rows changed by the last statement. `on_commit` hears what `query` read in the
        transaction, in commit order (see `Execute`).
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.submit(Execute(list(statements), future, query, on_commit))
        return await future

    def execute_nowait(
        self, sql: str, rows: Sequence[Sequence[Any]], on_rows: Callable[[int], None] | None = None
    ) -> None:
        """Queue a bookkeeping write for the next batch without waiting (see `Bulk`)."""
        if self._stopping:
            return
        self.submit(Bulk(sql, rows, on_rows))

    async def flush(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submit(Flush(future))
        await future

    # -- the event loop's side ---------------------------------------------------------------

    async def _run(self) -> None:
        # Batches begun and not yet finished: at most the one being committed and the next.
        unfinished: list[_Batch] = []
        stopping = False
        try:
            while True:
                ops: list[Op] = []
                if not stopping and not unfinished:
                    first = await self._queue.get()
                    if first is None:
                        stopping = True
                    else:
                        ops.append(first)
                if not stopping:
                    stopping = self._take_queued(ops)
                # Hand the next batch to the thread before publishing the one it is committing.
                following = self._begin(ops) if ops else None
                if following is not None:
                    unfinished.append(following)
                if len(unfinished) > 1 or (unfinished and following is None):
                    await self._finish(unfinished[0], unfinished[1] if len(unfinished) > 1 else None)
                    del unfinished[0]
                if not unfinished and stopping:
                    return
        except BaseException as exc:
            # A bug or a cancellation: nobody may wait forever for a write that will never come.
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("store.writer_failed")
            self._stopping = True
            pending = [op for batch in unfinished for op in batch.ops]
            while not self._queue.empty():
                op = self._queue.get_nowait()
                if op is not None:
                    pending.append(op)
            fail_all(pending, StoreUnavailable("the store's writer stopped"))
            raise

    def _take_queued(self, ops: list[Op]) -> bool:
        """Add what is queued now to `ops`, within the batch limits; True once stop was asked."""
        notes = sum(len(op.drafts) for op in ops if isinstance(op, Insert))
        queue = self._queue
        while len(ops) < MAX_OPS_PER_BATCH and notes < MAX_NOTIFICATIONS_PER_BATCH and not queue.empty():
            op = queue.get_nowait()
            if op is None:
                return True
            ops.append(op)
            if isinstance(op, Insert):
                notes += len(op.drafts)
        return False

    def _begin(self, ops: list[Op]) -> _Batch | None:
        """Start a batch's transaction on the writer thread and feed it as it is prepared."""
        began = time.perf_counter()
        now = self._clock.now()
        # Stored with millisecond precision: keep the returned copy identical to what is read back.
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        stamp = format_timestamp(now)
        tx = Opening(functools.partial(self._open_transaction, self.seqs.next_seq, stamp))
        staged: list[Staged] = []
        bulk: dict[tuple[str, Callable[[int], None] | None], list[Sequence[Any]]] = {}
        executes: list[tuple[list[Statement], Query | None]] = []
        kept: list[Op] = []
        try:
            stager = Stager(now, stamp, sum(len(op.drafts) for op in ops if isinstance(op, Insert)))
            guess = self.seqs.batch_guess()
            chunk: list[InsertRows] = []
            in_chunk = 0
            for op in ops:
                if isinstance(op, Insert):
                    try:
                        staged_op, rows = stager.stage(op.drafts, op.idempotency, op.lifetimes, guess)
                    except Exception:  # validated drafts never get here; if one does, it fails alone
                        log.exception("store.stage_failed")
                        fail(op, StoreError("the notification could not be encoded for storage"))
                        continue
                    guess += len(op.drafts)
                    staged.append(staged_op)
                    chunk.append(rows)
                    in_chunk += rows.count
                    if in_chunk >= CHUNK_NOTIFICATIONS:
                        self._thread.submit(self._insert, tx, chunk)
                        chunk, in_chunk = [], 0
                elif isinstance(op, Bulk):
                    bulk.setdefault((op.sql, op.on_rows), []).extend(op.rows)
                elif isinstance(op, Execute):
                    executes.append((op.statements, op.query))
                kept.append(op)
            encoded = [(sql, encode_rows(rows)) for (sql, _), rows in bulk.items()]
            self.seqs.staged(guess)
        except Exception:  # never leave the thread's transaction open: every later batch would fail
            log.exception("store.batch_failed", extra={"ops": len(ops)})
            self._thread.submit(self._abandon, tx)
            fail_all(ops, StoreError("the write could not be committed"))
            return None
        # The last chunk goes with the commit: a batch of one chunk is one step on the thread.
        result = self._thread.call(self._commit, tx, chunk, encoded, executes)
        return _Batch(kept, staged, list(bulk), now, stamp, result, began, sum(len(s.drafts) for s in staged))

    async def _finish(self, batch: _Batch, following: _Batch | None) -> None:
        """Wait for a batch's commit; then publish its notifications and answer its writers."""
        try:
            done = await batch.result
        except sqlite3.Error as exc:
            log.error("store.batch_failed", extra={"ops": len(batch.ops), "error": type(exc).__name__})
            self.stats.failures += 1
            fail_all(batch.ops, StoreError(f"the database refused the write ({type(exc).__name__})"))
            self.seqs.failed()
            return
        except Exception:  # never let one bad batch stop every future write
            log.exception("store.batch_failed", extra={"ops": len(batch.ops)})
            fail_all(batch.ops, StoreError("the write could not be committed"))
            self.stats.failures += 1
            self.seqs.failed()
            return
        stats = self.stats
        stats.commits += 1
        stats.batch_sizes.observe(len(batch.ops))
        stats.commit_seconds.observe(time.perf_counter() - batch.began)
        if self._on_commit is not None:
            self._on_commit()
        stored: list[list[Notification] | Exception] = []
        committed: list[Notification] = []
        for staged, first in zip(batch.staged, done.first_seqs, strict=True):
            if first is None:
                stored.append(IdempotencyConflict("this Idempotency-Key was already used"))
                continue
            if isinstance(first, Exception):
                stored.append(translate(first))
                continue
            notes = committed_notes(staged, first, batch.created_at, batch.stamp)
            stored.append(notes)
            committed.extend(notes)
        self.seqs.committed(done.last_seq, following.notes_count if following is not None else 0)
        for (_sql, on_rows), rows in zip(batch.bulk_keys, done.bulk_rows, strict=True):
            if on_rows is not None and rows is not None:
                on_rows(rows)
        if committed:
            self.stats.stored += len(committed)
            self._on_notifications(committed)
        # Then what the batch's other writes committed, in their order: their seqs come after its
        # notifications', and before any later batch is published.
        executes = (op for op in batch.ops if isinstance(op, Execute))
        for op, outcome, read in zip(executes, done.executed, done.queried, strict=True):
            if op.on_commit is not None and not isinstance(outcome, sqlite3.Error):
                try:
                    op.on_commit(read)
                except Exception:
                    log.exception("store.commit_listener_failed")
        resolve(batch.ops, stored, done.executed)

    # -- the writer thread's side ------------------------------------------------------------

    def _connect(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            for pragma in self._pragmas:
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Each runs on the writer thread, in the order submitted. `tx` returns the batch's Transaction,
    # begun by whichever step calls it first: the steps queue behind each other.

    def _open_transaction(self, next_seq: int, created_at: str) -> Transaction:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the writer's connection is closed")
        tx = Transaction(self._conn, self.seqs.thread_start(next_seq), created_at)
        tx.begin()
        return tx

    def _insert(self, tx: Opening, inserts: list[InsertRows]) -> None:
        tx().insert(inserts)

    def _commit(
        self,
        tx: Opening,
        inserts: list[InsertRows],
        bulk: list[tuple[str, str]],
        executes: list[tuple[list[Statement], Query | None]],
    ) -> BatchDone:
        transaction = tx()
        if inserts:
            transaction.insert(inserts)
        done = transaction.finish(bulk, executes)
        self.seqs.thread_committed(done.last_seq)
        return done

    def _abandon(self, tx: Opening) -> None:
        if tx.begun is not None:
            tx.begun.abandon()
