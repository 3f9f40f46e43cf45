"""The embedded store: one SQLite file through aiosqlite, WAL, one writer task with group commit.

Every write goes through `_writer`, which takes all writes waiting at that moment and commits them
in one transaction: each notification is durable before its sender hears 2xx, yet a burst costs a
handful of fsyncs rather than one per notification. Reads use a separate read-only connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from .migrations import migrate
from .models import (
    BROADCAST_RECIPIENT,
    ApiKey,
    IdempotencyRecord,
    Notification,
    NotificationDraft,
    StoreCounts,
    format_timestamp,
    parse_timestamp,
    utc_now,
)
from .store import (
    NOTIFICATION_STATUSES,
    CommitListener,
    IdempotencyClaim,
    IdempotencyConflict,
    StaffAccount,
    StaffSession,
    StoreClosed,
    StoreError,
)

log = logging.getLogger("diagnoxix.store")

# One transaction holds at most this many queued writes; a larger backlog is split so no single
# commit keeps senders waiting long, and memory per batch stays bounded.
MAX_OPS_PER_BATCH = 2000
# How long a connection waits for a lock held by another process (e.g. a CLI command).
BUSY_TIMEOUT_MS = 5000

_NOTIFICATION_COLUMNS = (
    "seq, id, user_id, type, title, message, data, priority, created_at, delivered_at, read_at"
)
_INSERT_NOTIFICATION = (
    f"INSERT INTO notifications ({_NOTIFICATION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL)"
)
_INSERT_IDEMPOTENCY = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
    " created_at) VALUES (?,?,?,?,?,?)"
)


@dataclass(slots=True)
class _Insert:
    drafts: Sequence[NotificationDraft]
    idempotency: IdempotencyClaim | None
    future: asyncio.Future[list[Notification]]


@dataclass(slots=True)
class _Execute:
    """A parameterised statement run once per parameter tuple inside the batch's transaction."""

    sql: str
    params: list[tuple[Any, ...]]
    future: asyncio.Future[int] | None = None
    on_rows: Callable[[int], None] | None = None


@dataclass(slots=True)
class _Flush:
    future: asyncio.Future[None]


_Op = _Insert | _Execute | _Flush


@dataclass(slots=True)
class _Counters:
    stored: int = 0
    delivered: int = 0
    commits: int = 0
    next_seq: int = 1
    listeners: list[CommitListener] = field(default_factory=list)


def _row_to_notification(row: sqlite3.Row | tuple[Any, ...]) -> Notification:
    seq, nid, user_id, kind, title, message, data, priority, created, delivered, read = row
    return Notification(
        seq=seq,
        id=nid,
        user_id=user_id,
        type=kind,
        title=title,
        message=message,
        data=json.loads(data),
        priority=priority,
        created_at=parse_timestamp(created),
        delivered_at=parse_timestamp(delivered) if delivered else None,
        read_at=parse_timestamp(read) if read else None,
    )


def _row_to_api_key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, created, last_used, revoked = row
    return ApiKey(
        id=key_id,
        name=name,
        created_at=parse_timestamp(created),
        last_used_at=parse_timestamp(last_used) if last_used else None,
        revoked_at=parse_timestamp(revoked) if revoked else None,
    )


class SqliteStore:
    """`Store` on one SQLite file. Use `open()`/`close()` (the app does it in a cleanup context)."""

    def __init__(self, path: Path, *, synchronous: str = "FULL", exclusive: bool = False) -> None:
        self._path = path
        # A serving process holds a lock file beside the database: its hub only sees what its own
        # writer commits, so two servers on one file would each miss the other's notifications.
        self._exclusive = exclusive
        self._lock_fd: int | None = None
        self._synchronous = synchronous
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._counters = _Counters()
        self._epoch = ""
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._exclusive:
            self._take_lock()
        try:
            self._create_private_file()
            writer = await aiosqlite.connect(self._path, isolation_level=None)
            try:
                await writer.execute("PRAGMA journal_mode=WAL")
                await writer.execute(f"PRAGMA synchronous={self._synchronous}")
                await writer.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                await writer.execute("PRAGMA foreign_keys=ON")
                # Deleted rows (purged notifications, revoked keys) are overwritten, not left on disk.
                await writer.execute("PRAGMA secure_delete=ON")
                await migrate(writer)
                reader = await aiosqlite.connect(self._path, isolation_level=None)
            except BaseException:
                await writer.close()
                raise
        except BaseException:
            self._release_lock()
            raise
        await reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await reader.execute("PRAGMA query_only=1")
        self._writer_conn, self._reader_conn = writer, reader
        async with writer.execute(
            "SELECT coalesce(max(seq), 0), count(*), count(delivered_at) FROM notifications"
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        self._counters.next_seq = int(row[0]) + 1
        self._counters.stored, self._counters.delivered = int(row[1]), int(row[2])
        self._writer_task = asyncio.create_task(self._writer(), name="diagnoxix-store-writer")
        self._epoch = await self.get_or_create_meta("epoch", lambda: uuid.uuid4().hex)

    async def close(self) -> None:
        """Commit everything queued, stop the writer and close both connections.

        Closing matters: aiosqlite keeps a non-daemon thread per connection, and an unclosed one
        keeps the process from exiting.
        """
        if self._closing:
            return
        self._closing = True
        if self._writer_task is not None:
            self._queue.put_nowait(None)
            await self._writer_task
        for conn in (self._reader_conn, self._writer_conn):
            if conn is not None:
                await conn.close()
        self._reader_conn = self._writer_conn = None
        self._release_lock()

    def _create_private_file(self) -> None:
        """Create the file owner-only before SQLite opens it (SQLite gives -wal/-shm the same mode).

        It holds health information and the server secret; a file created under the usual umask
        would be world-readable, at least for a moment.
        """
        try:
            os.close(os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            if self._path.stat().st_mode & 0o077:
                log.warning("store.file_permissions", extra={"path": str(self._path), "advice": "chmod 600"})

    def _take_lock(self) -> None:
        lock_path = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"another Diagnoxix Notify server is already using {self._path}; "
                "stop it or pass a different --db"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- properties ------------------------------------------------------------------------

    @property
    def max_seq(self) -> int:
        return self._counters.next_seq - 1

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def path(self) -> Path:
        return self._path

    def counts(self) -> StoreCounts:
        counters = self._counters
        return StoreCounts(stored=counters.stored, delivered=counters.delivered, commits=counters.commits)

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._counters.listeners.append(listener)

    # -- writes ----------------------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        if self._closing or self._writer_task is None:
            raise StoreClosed("the store is closed")
        self._queue.put_nowait(op)

    async def insert_notifications(
        self, drafts: Sequence[NotificationDraft], idempotency: IdempotencyClaim | None = None
    ) -> list[Notification]:
        future: asyncio.Future[list[Notification]] = asyncio.get_running_loop().create_future()
        self._submit(_Insert(drafts, idempotency, future))
        return await future

    async def _execute(self, sql: str, params: list[tuple[Any, ...]]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._submit(_Execute(sql, params, future))
        return await future

    def mark_delivered(self, notification_ids: Sequence[str]) -> None:
        if not notification_ids or self._closing:
            return
        now = format_timestamp(utc_now())
        self._submit(
            _Execute(
                "UPDATE notifications SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                [(now, nid) for nid in notification_ids],
                on_rows=self._count_delivered,
            )
        )

    def _count_delivered(self, rows: int) -> None:
        self._counters.delivered += rows

    async def create_api_key(self, key_id: str, name: str, secret_hash: str) -> ApiKey:
        now = utc_now()
        await self._execute(
            "INSERT INTO api_keys (id, name, secret_hash, created_at) VALUES (?,?,?,?)",
            [(key_id, name, secret_hash, format_timestamp(now))],
        )
        return ApiKey(key_id, name, now, None, None)

    async def revoke_api_key(self, key_id: str) -> bool:
        changed = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            [(format_timestamp(utc_now()), key_id)],
        )
        return changed > 0

    def touch_api_key(self, key_id: str) -> None:
        if self._closing:
            return
        self._submit(
            _Execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                [(format_timestamp(utc_now()), key_id)],
            )
        )

    def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any] | None = None
    ) -> None:
        self._submit(
            _Execute(
                "INSERT INTO audit_log (at, actor, action, target, details) VALUES (?,?,?,?,?)",
                [(format_timestamp(utc_now()), actor, action, target, json.dumps(details or {}))],
            )
        )

    async def get_or_create_meta(self, key: str, default: Callable[[], str]) -> str:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            [(key, default())],
        )
        rows = await self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0])

    async def check(self) -> None:
        if self._writer_task is None or self._writer_task.done():
            raise StoreError("the writer is not running")
        try:
            await self._read("SELECT 1", ())
        except sqlite3.Error as exc:
            raise StoreError(f"the database is not answering ({type(exc).__name__})") from None

    async def flush(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Flush(future))
        await future

    # -- the writer task -------------------------------------------------------------------

    async def _writer(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch: list[_Op] = [first]
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

    async def _commit(self, batch: list[_Op]) -> None:
        conn = self._writer_conn
        assert conn is not None
        changed: list[int] = []
        stored: list[list[Notification]] = []
        try:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                rows, claims = await self._stage_inserts(conn, batch, stored)
                if rows:
                    await conn.executemany(_INSERT_NOTIFICATION, rows)
                if claims:
                    await conn.executemany(_INSERT_IDEMPOTENCY, claims)
                for op in batch:
                    if isinstance(op, _Execute):
                        cursor = await conn.executemany(op.sql, op.params)
                        changed.append(cursor.rowcount)
                await conn.commit()
                self._counters.commits += 1
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
        committed = [note for notes in stored for note in notes]
        if committed:
            self._counters.next_seq = committed[-1].seq + 1
            self._counters.stored += len(committed)
            for listener in self._counters.listeners:
                try:
                    listener(committed)
                except Exception:
                    log.exception("store.listener_failed")
        self._resolve(batch, stored, changed)

    async def _stage_inserts(
        self, conn: aiosqlite.Connection, batch: list[_Op], stored: list[list[Notification]]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Give each draft its id and seq; returns the notification rows and idempotency rows.

        The seq base is read inside the write transaction, so even a second process writing to
        the same file (a CLI tool, an operator's mistake) cannot make two rows share a seq.
        """
        rows: list[tuple[Any, ...]] = []
        claims: list[tuple[Any, ...]] = []
        if not any(isinstance(op, _Insert) for op in batch):
            return rows, claims
        async with conn.execute("SELECT coalesce(max(seq), 0) FROM notifications") as cursor:
            top = await cursor.fetchone()
        next_seq = max(int(top[0]) if top else 0, self._counters.next_seq - 1) + 1
        # Stored with millisecond precision: keep the returned copy identical to what is read back.
        now = utc_now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        stamp = format_timestamp(now)
        for op in batch:
            if not isinstance(op, _Insert):
                continue
            notes: list[Notification] = []
            for draft in op.drafts:
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
                )
                next_seq += 1
                notes.append(note)
                rows.append(
                    (
                        note.seq,
                        note.id,
                        note.user_id,
                        note.type,
                        note.title,
                        note.message,
                        json.dumps(note.data, ensure_ascii=False, separators=(",", ":")),
                        note.priority,
                        stamp,
                    )
                )
            stored.append(notes)
            if op.idempotency is not None:
                claim = op.idempotency
                claims.append(
                    (
                        claim.api_key_id,
                        claim.key,
                        claim.request_hash,
                        json.dumps([n.id for n in notes]),
                        claim.status,
                        stamp,
                    )
                )
        return rows, claims

    @staticmethod
    def _resolve(batch: list[_Op], stored: list[list[Notification]], changed: list[int]) -> None:
        inserts = iter(stored)
        results = iter(changed)
        for op in batch:
            if isinstance(op, _Insert):
                notes = next(inserts)
                if not op.future.done():
                    op.future.set_result(notes)
            elif isinstance(op, _Execute):
                rowcount = next(results)
                if op.on_rows is not None:
                    op.on_rows(rowcount)
                if op.future is not None and not op.future.done():
                    op.future.set_result(rowcount)
            elif not op.future.done():
                op.future.set_result(None)

    # -- reads -----------------------------------------------------------------------------

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._reader_conn
        if conn is None:
            raise StoreClosed("the store is closed")
        async with conn.execute(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def notifications_for(
        self,
        user_id: str,
        *,
        after_seq: int,
        upto_seq: int,
        limit: int,
        undelivered_only: bool = False,
    ) -> list[Notification]:
        if undelivered_only:
            sql = (
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications INDEXED BY"
                " notifications_undelivered WHERE user_id = ? AND delivered_at IS NULL"
                " AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
            )
            params: tuple[Any, ...] = (user_id, after_seq, upto_seq, limit)
        else:
            sql = (
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications"
                " WHERE user_id IN (?, ?) AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
            )
            params = (user_id, BROADCAST_RECIPIENT, after_seq, upto_seq, limit)
        return [_row_to_notification(row) for row in await self._read(sql, params)]

    async def history(self, user_id: str, *, before_seq: int | None, limit: int) -> list[Notification]:
        before = before_seq if before_seq is not None else self._counters.next_seq
        rows = await self._read(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications"
            " WHERE user_id IN (?, ?) AND seq < ? ORDER BY seq DESC LIMIT ?",
            (user_id, BROADCAST_RECIPIENT, before, limit),
        )
        return [_row_to_notification(row) for row in rows]

    async def get_notifications(self, notification_ids: Sequence[str]) -> list[Notification]:
        if not notification_ids:
            return []
        found: dict[str, Notification] = {}
        # SQLite caps bound parameters per statement; query in chunks.
        for start in range(0, len(notification_ids), 500):
            chunk = list(notification_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE id IN ({marks})",
                tuple(chunk),
            )
            for row in rows:
                note = _row_to_notification(row)
                found[note.id] = note
        return [found[nid] for nid in notification_ids if nid in found]

    async def get_idempotency(self, api_key_id: str, key: str) -> IdempotencyRecord | None:
        rows = await self._read(
            "SELECT request_hash, notification_ids, status FROM idempotency_keys"
            " WHERE api_key_id = ? AND key = ?",
            (api_key_id, key),
        )
        if not rows:
            return None
        request_hash, ids, status = rows[0]
        return IdempotencyRecord(request_hash, tuple(json.loads(ids)), int(status))

    async def find_api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        rows = await self._read(
            "SELECT id, name, created_at, last_used_at, revoked_at, secret_hash FROM api_keys WHERE id = ?",
            (key_id,),
        )
        if not rows:
            return None
        return _row_to_api_key(rows[0][:5]), str(rows[0][5])

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._read(
            "SELECT id, name, created_at, last_used_at, revoked_at FROM api_keys ORDER BY created_at, id",
            (),
        )
        return [_row_to_api_key(row) for row in rows]

    async def audit_entries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT id, at, actor, action, target, details FROM audit_log ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            {
                "id": r[0],
                "at": r[1],
                "actor": r[2],
                "action": r[3],
                "target": r[4],
                "details": json.loads(r[5]),
            }
            for r in rows
        ]

    # -- staff dashboard --

    async def create_staff_account(self, username: str, password_hash: str, role: str) -> bool:
        changed = await self._execute(
            "INSERT INTO staff_accounts (username, password_hash, role, created_at) VALUES (?,?,?,?)"
            " ON CONFLICT (username) DO NOTHING",
            [(username, password_hash, role, format_timestamp(utc_now()))],
        )
        return changed > 0

    async def find_staff_account(self, username: str) -> StaffAccount | None:
        rows = await self._read(
            "SELECT username, password_hash, role, created_at, disabled_at FROM staff_accounts"
            " WHERE username = ?",
            (username,),
        )
        if not rows:
            return None
        name, password_hash, role, created, disabled = rows[0]
        return StaffAccount(
            name,
            password_hash,
            role,
            parse_timestamp(created),
            parse_timestamp(disabled) if disabled else None,
        )

    async def count_staff_accounts(self) -> int:
        rows = await self._read("SELECT count(*) FROM staff_accounts", ())
        return int(rows[0][0])

    async def create_staff_session(self, id_hash: str, username: str, expires_at: datetime) -> None:
        await self._execute(
            "INSERT INTO staff_sessions (id_hash, username, created_at, expires_at) VALUES (?,?,?,?)",
            [(id_hash, username, format_timestamp(utc_now()), format_timestamp(expires_at))],
        )

    async def find_staff_session(self, id_hash: str) -> StaffSession | None:
        rows = await self._read(
            "SELECT s.id_hash, s.username, a.role, s.created_at, s.expires_at, s.revoked_at"
            " FROM staff_sessions s JOIN staff_accounts a ON a.username = s.username"
            " WHERE s.id_hash = ? AND a.disabled_at IS NULL",
            (id_hash,),
        )
        if not rows:
            return None
        sid, username, role, created, expires, revoked = rows[0]
        return StaffSession(
            sid,
            username,
            role,
            parse_timestamp(created),
            parse_timestamp(expires),
            parse_timestamp(revoked) if revoked else None,
        )

    async def revoke_staff_session(self, id_hash: str) -> bool:
        changed = await self._execute(
            "UPDATE staff_sessions SET revoked_at = ? WHERE id_hash = ? AND revoked_at IS NULL",
            [(format_timestamp(utc_now()), id_hash)],
        )
        return changed > 0

    async def record_login_failure(self, username: str) -> None:
        await self._execute(
            "INSERT INTO login_failures (username, at) VALUES (?, ?)",
            [(username, format_timestamp(utc_now()))],
        )

    async def clear_login_failures(self, username: str) -> None:
        await self._execute("DELETE FROM login_failures WHERE username = ?", [(username,)])

    async def count_login_failures(self, username: str, since: datetime) -> int:
        rows = await self._read(
            "SELECT count(*) FROM login_failures WHERE username = ? AND at >= ?",
            (username, format_timestamp(since)),
        )
        return int(rows[0][0])

    async def list_notifications(
        self,
        *,
        user_id: str | None,
        type: str | None,
        status: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Notification]:
        # Only constant fragments are joined into the SQL; every value is bound.
        where = ["seq < ?"]
        params: list[Any] = [before_seq if before_seq is not None else self._counters.next_seq]
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if type is not None:
            where.append("type = ?")
            params.append(type)
        if status is not None:
            if status not in NOTIFICATION_STATUSES:
                raise ValueError(f"unknown status {status!r}")
            where.append(
                {
                    "queued": "delivered_at IS NULL AND user_id != '*'",
                    "delivered": "delivered_at IS NOT NULL AND read_at IS NULL",
                    "read": "read_at IS NOT NULL",
                    "broadcast": "user_id = '*'",
                }[status]
            )
        params.append(limit)
        rows = await self._read(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE {' AND '.join(where)}"
            " ORDER BY seq DESC LIMIT ?",
            tuple(params),
        )
        return [_row_to_notification(row) for row in rows]

    async def unread_count(self, user_id: str) -> int:
        rows = await self._read(
            "SELECT count(*) FROM notifications WHERE user_id = ? AND read_at IS NULL", (user_id,)
        )
        return int(rows[0][0])

    async def count_read_since(self, since: datetime) -> int:
        rows = await self._read(
            "SELECT count(*) FROM notifications WHERE read_at >= ?", (format_timestamp(since),)
        )
        return int(rows[0][0])

    async def audit_page(self, *, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT id, at, actor, action, target, details FROM audit_log WHERE id < ?"
            " ORDER BY id DESC LIMIT ?",
            (before_id if before_id is not None else 2**62, limit),
        )
        return [
            {
                "id": r[0],
                "at": r[1],
                "actor": r[2],
                "action": r[3],
                "target": r[4],
                "details": json.loads(r[5]),
            }
            for r in rows
        ]


def _translate(op: _Op, exc: sqlite3.Error) -> Exception:
    if isinstance(op, _Insert) and op.idempotency and isinstance(exc, sqlite3.IntegrityError):
        return IdempotencyConflict("this Idempotency-Key was already used")
    log.error("store.write_failed", extra={"error": type(exc).__name__})
    return StoreError(f"the database refused the write ({type(exc).__name__})")


def _fail(op: _Op, exc: Exception) -> None:
    future = op.future
    if future is not None and not future.done():
        future.set_exception(exc)
        # A fire-and-forget write has nobody awaiting it; don't warn about an unretrieved error.
        with contextlib.suppress(BaseException):
            future.exception()
