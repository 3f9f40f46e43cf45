"""The single writer of the SQLite store: every write, batched into one transaction (group commit).

The writer task takes every write waiting at that moment and commits them together: each
notification is durable before its sender hears 2xx, yet a burst costs a handful of fsyncs rather
than one per notification. Listeners hear of committed notifications synchronously, in seq order,
right after the commit and before any sender is answered (save before send).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiosqlite

from .models import Notification, NotificationDraft, format_timestamp, utc_now
from .store import CommitListener, IdempotencyClaim, IdempotencyConflict, StoreClosed, StoreError

log = logging.getLogger("diagnoxix.store")

# One transaction holds at most this many queued writes; a larger backlog is split so no single
# commit keeps senders waiting long, and memory per batch stays bounded.
MAX_OPS_PER_BATCH = 2000

NOTIFICATION_COLUMNS = (
    "seq, id, user_id, type, title, message, data, priority, created_at, delivered_at, read_at, expires_at"
)
_INSERT_NOTIFICATION = (
    f"INSERT INTO notifications ({NOTIFICATION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL,?)"
)
_INSERT_IDEMPOTENCY = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
    " created_at) VALUES (?,?,?,?,?,?)"
)


@dataclass(slots=True)
class Insert:
    drafts: Sequence[NotificationDraft]
    idempotency: IdempotencyClaim | None
    future: asyncio.Future[list[Notification]]


Statement = tuple[str, list[tuple[Any, ...]]]


@dataclass(slots=True)
class Execute:
    """Statements run in order inside the batch's transaction, each once per parameter tuple.

    They commit or roll back together. The result is the rows changed by the last statement.
    """

    statements: list[Statement]
    future: asyncio.Future[int] | None = None
    on_rows: Callable[[int], None] | None = None


@dataclass(slots=True)
class Flush:
    future: asyncio.Future[None]


Op = Insert | Execute | Flush


@dataclass(slots=True)
class WriterCounters:
    stored: int = 0
    commits: int = 0
    next_seq: int = 1
    listeners: list[CommitListener] = field(default_factory=list)


class GroupCommitWriter:
    """Owns the write connection's transactions. Start it once, stop it once."""

    def __init__(self, conn: aiosqlite.Connection, counters: WriterCounters) -> None:
        self._conn = conn
        self.counters = counters
        self._queue: asyncio.Queue[Op | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="diagnoxix-store-writer")

    async def stop(self) -> None:
        """Commit everything queued, then end the task."""
        if self._task is None or self._stopping:
            return
        self._stopping = True
        self._queue.put_nowait(None)
        await self._task

    def submit(self, op: Op) -> None:
        if not self.running:
            raise StoreClosed("the store is closed")
        self._queue.put_nowait(op)

    async def insert(
        self, drafts: Sequence[NotificationDraft], idempotency: IdempotencyClaim | None
    ) -> list[Notification]:
        future: asyncio.Future[list[Notification]] = asyncio.get_running_loop().create_future()
        self.submit(Insert(drafts, idempotency, future))
        return await future

    async def execute(self, *statements: Statement) -> int:
        """Run statements atomically in the next batch and wait for the commit.

        Returns the rows changed by the last statement.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.submit(Execute(list(statements), future))
        return await future

    def execute_nowait(self, *statements: Statement, on_rows: Callable[[int], None] | None = None) -> None:
        """Queue statements for the next batch without waiting (bookkeeping writes)."""
        if self._stopping:
            return
        self.submit(Execute(list(statements), on_rows=on_rows))

    async def flush(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.submit(Flush(future))
        await future

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch: list[Op] = [first]
            while len(batch) < MAX_OPS_PER_BATCH and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stopping = True
                    break
                batch.append(op)
            try:
                await self._commit(batch)
            except Exception:  # never let one bad batch stop every future write
                log.exception("store.batch_failed", extra={"ops": len(batch)})
                for op in batch:
                    _fail(op, StoreError("the write could not be committed"))

    async def _commit(self, batch: list[Op]) -> None:
        conn = self._conn
        changed: list[int] = []
        merged_rows: list[tuple[Callable[[int], None], int]] = []
        stored: list[list[Notification]] = []
        try:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                rows, claims = await self._stage_inserts(batch, stored)
                if rows:
                    await conn.executemany(_INSERT_NOTIFICATION, rows)
                if claims:
                    await conn.executemany(_INSERT_IDEMPOTENCY, claims)
                changed, merged_rows = await self._run_executes(batch)
                await conn.commit()
                self.counters.commits += 1
            except BaseException:
                await conn.rollback()
                raise
        except sqlite3.Error as exc:
            if len(batch) > 1:
                # Find the culprit: commit each write alone so the others still succeed.
                for op in batch:
                    await self._commit([op])
                return
            _fail(batch[0], _translate(batch[0], exc))
            return
        for on_rows, rowcount in merged_rows:
            on_rows(rowcount)
        committed = [note for notes in stored for note in notes]
        if committed:
            self.counters.next_seq = committed[-1].seq + 1
            self.counters.stored += len(committed)
            for listener in self.counters.listeners:
                try:
                    listener(committed)
                except Exception:
                    log.exception("store.listener_failed")
        _resolve(batch, stored, changed)

    async def _run_executes(
        self, batch: list[Op]
    ) -> tuple[list[int], list[tuple[Callable[[int], None], int]]]:
        """Run the batch's statements. Returns rows changed per Execute op (batch order) and, for
        merged bookkeeping writes, (on_rows, rows changed) to report once the batch commits.

        Bookkeeping writes nobody waits for (delivery marks, audit rows, key touches) that share
        their SQL are merged into one executemany, and run first: at 1,000 requests a second each
        request queues several, and one call per op would make the writer the bottleneck.
        """
        conn = self._conn
        merged: dict[tuple[str, Callable[[int], None] | None], list[tuple[Any, ...]]] = {}
        for op in batch:
            if isinstance(op, Execute) and op.future is None and len(op.statements) == 1:
                sql, params = op.statements[0]
                merged.setdefault((sql, op.on_rows), []).extend(params)
        merged_rows: list[tuple[Callable[[int], None], int]] = []
        for (sql, on_rows), params in merged.items():
            cursor = await conn.executemany(sql, params)
            if on_rows is not None:
                merged_rows.append((on_rows, cursor.rowcount))
        changed: list[int] = []
        for op in batch:
            if not isinstance(op, Execute):
                continue
            rowcount = 0  # a merged op reports through on_rows, once for its group
            if op.future is not None or len(op.statements) != 1:
                for sql, params in op.statements:
                    cursor = await conn.executemany(sql, params)
                    rowcount = cursor.rowcount
            changed.append(rowcount)
        return changed, merged_rows

    async def _stage_inserts(
        self, batch: list[Op], stored: list[list[Notification]]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Give each draft its id, seq and expiry; returns notification and idempotency rows.

        The seq base is read inside the write transaction, so even a second process writing to
        the same file (a CLI tool, an operator's mistake) cannot make two rows share a seq.
        """
        rows: list[tuple[Any, ...]] = []
        claims: list[tuple[Any, ...]] = []
        if not any(isinstance(op, Insert) for op in batch):
            return rows, claims
        async with self._conn.execute("SELECT coalesce(max(seq), 0) FROM notifications") as cursor:
            top = await cursor.fetchone()
        next_seq = max(int(top[0]) if top else 0, self.counters.next_seq - 1) + 1
        # Stored with millisecond precision: keep the returned copy identical to what is read back.
        now = utc_now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        stamp = format_timestamp(now)
        # Drafts of one batch share a few lifetimes: compute each expiry once.
        expiry: dict[int | None, tuple[datetime | None, str | None]] = {}
        for op in batch:
            if not isinstance(op, Insert):
                continue
            notes: list[Notification] = []
            for draft in op.drafts:
                expires, expires_stamp = expiry.get(draft.ttl_seconds) or expiry.setdefault(
                    draft.ttl_seconds, _expiry(now, draft.ttl_seconds)
                )
                data_json = json.dumps(draft.data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                note = Notification(
                    seq=next_seq,
                    id=str(uuid.uuid4()),
                    user_id=draft.user_id,
                    type=draft.type,
                    title=draft.title,
                    message=draft.message,
                    data=draft.data,
                    priority=draft.priority,
                    created_at=now,
                    expires_at=expires,
                    data_json=data_json,
                )
                next_seq += 1
                notes.append(note)
                rows.append((
                    note.seq, note.id, note.user_id, note.type, note.title, note.message, data_json,
                    note.priority, stamp, expires_stamp,
                ))  # fmt: skip
            stored.append(notes)
            if op.idempotency is not None:
                claim = op.idempotency
                claims.append((
                    claim.api_key_id, claim.key, claim.request_hash,
                    json.dumps([n.id for n in notes]), claim.status, stamp,
                ))  # fmt: skip
        return rows, claims


def _expiry(now: datetime, ttl_seconds: int | None) -> tuple[datetime | None, str | None]:
    if not ttl_seconds:
        return None, None
    expires = now + timedelta(seconds=ttl_seconds)
    return expires, format_timestamp(expires)


def _resolve(batch: list[Op], stored: list[list[Notification]], changed: list[int]) -> None:
    inserts = iter(stored)
    results = iter(changed)
    for op in batch:
        if isinstance(op, Insert):
            notes = next(inserts)
            if not op.future.done():
                op.future.set_result(notes)
        elif isinstance(op, Execute):
            rowcount = next(results)
            if op.future is not None:
                if op.on_rows is not None:
                    op.on_rows(rowcount)
                if not op.future.done():
                    op.future.set_result(rowcount)
        elif not op.future.done():
            op.future.set_result(None)


def _translate(op: Op, exc: sqlite3.Error) -> Exception:
    if isinstance(op, Insert) and op.idempotency and isinstance(exc, sqlite3.IntegrityError):
        return IdempotencyConflict("this Idempotency-Key was already used")
    log.error("store.write_failed", extra={"error": type(exc).__name__})
    return StoreError(f"the database refused the write ({type(exc).__name__})")


def _fail(op: Op, exc: Exception) -> None:
    future = op.future
    if future is not None and not future.done():
        future.set_exception(exc)
        # A fire-and-forget write has nobody awaiting it; don't warn about an unretrieved error.
        with contextlib.suppress(BaseException):
            future.exception()
