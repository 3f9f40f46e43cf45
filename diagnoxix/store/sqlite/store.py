"""The embedded store: one SQLite file in WAL mode, one writer with group commit.

Writes go through `writer.GroupCommitWriter` (its own thread and connection); reads go to a
read-only aiosqlite connection, and point reads by key to a read-only connection on the loop.
Nothing expired is ever served: every read of notifications filters on `expires_at`.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from diagnoxix.clock import Clock, SystemClock
from diagnoxix.models import Notification, NotificationDraft, StoreCounts, format_timestamp
from diagnoxix.store.key_cache import KeyCache
from diagnoxix.store.protocols import (
    CommitListener,
    Correction,
    CorrectionListener,
    IdempotencyClaim,
    MarkListener,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)
from diagnoxix.store.sqlite.batch import Query, Statement
from diagnoxix.store.sqlite.checkpoint import CHECKPOINT_DELAY_SECONDS, WAL_LIMIT_PAGES, Checkpointer
from diagnoxix.store.sqlite.corrections import CorrectionQueries
from diagnoxix.store.sqlite.critical import CriticalQueries
from diagnoxix.store.sqlite.devices import DeviceQueries
from diagnoxix.store.sqlite.files import (
    create_private_file,
    release_serving_lock,
    serving_key_cache,
    take_serving_lock,
)
from diagnoxix.store.sqlite.keys import KeyQueries
from diagnoxix.store.sqlite.marks import DeliveryMarks
from diagnoxix.store.sqlite.messaging import MessagingQueries
from diagnoxix.store.sqlite.migrations import migrate
from diagnoxix.store.sqlite.preferences import PreferenceQueries
from diagnoxix.store.sqlite.purge import PurgeQueries
from diagnoxix.store.sqlite.push import PushQueries
from diagnoxix.store.sqlite.restores import UNDONE_RANGES, UndoneSeqs, highest_seq_sql
from diagnoxix.store.sqlite.seqs import SeqCounter
from diagnoxix.store.sqlite.staff import StaffQueries
from diagnoxix.store.sqlite.timers import TimerQueries
from diagnoxix.store.sqlite.webhooks import WebhookQueries
from diagnoxix.store.sqlite.writer import GroupCommitWriter

log = logging.getLogger("diagnoxix.store")

# Bytes per database page, for files this server creates.
PAGE_SIZE = 16384
# How long a connection waits for a lock held by another process (e.g. a CLI command).
BUSY_TIMEOUT_MS = 5000


class SqliteStore(
    DeliveryMarks,
    KeyQueries,
    StaffQueries,
    DeviceQueries,
    TimerQueries,
    CorrectionQueries,
    PreferenceQueries,
    WebhookQueries,
    CriticalQueries,
    MessagingQueries,
    PushQueries,
    PurgeQueries,
):
    """`Store` on one SQLite file. Use `open()`/`close()` (the app does it in a cleanup context)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        exclusive: bool = False,
        checkpoint_delay: float = CHECKPOINT_DELAY_SECONDS,
        wal_limit_pages: int = WAL_LIMIT_PAGES,
        clock: Clock | None = None,
    ) -> None:
        self._path = path
        # Decides what has expired, and stamps what is written (tests move a manual one).
        self._clock: Clock = clock or SystemClock()
        self._checkpoint_delay = checkpoint_delay
        self._wal_limit_pages = wal_limit_pages
        # A serving process holds a lock file beside the database: its hub only sees what its own
        # writer commits, so two servers on one file would each miss the other's notifications.
        self._exclusive = exclusive
        self._lock_fd: int | None = None
        # API keys found recently: serving processes only (their lock file counts revocations).
        self._key_cache: KeyCache | None = None
        self._synchronous = synchronous
        self._reader_conn: aiosqlite.Connection | None = None
        # For point reads by key on the event loop itself (see `_read_now`).
        self._point_conn: sqlite3.Connection | None = None
        self._seqs = SeqCounter(1)
        self._undone = UndoneSeqs()
        self._commit_listeners: list[CommitListener] = []
        self._mark_listeners: list[MarkListener] = []
        self._correction_listeners: list[CorrectionListener] = []
        self._writer: GroupCommitWriter | None = None
        self._checkpointer: Checkpointer | None = None
        self._delivered = 0
        self._stored_at_open = 0
        self._epoch = ""
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Raises StoreError, with a message an operator can act on, when the file cannot be used."""
        try:
            await self._open()
        except (OSError, sqlite3.Error) as exc:
            # A directory that cannot be written, a path through a file, a corrupt database file.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError(f"cannot open the database {self._path}: {reason}") from None

    async def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._exclusive:
            self._take_lock()
        try:
            create_private_file(self._path)
            await self._prepare_file()
            self._checkpointer = Checkpointer(
                self._path, busy_timeout_ms=BUSY_TIMEOUT_MS, delay=self._checkpoint_delay
            )
            await self._checkpointer.start()
            self._writer = GroupCommitWriter(
                self._path,
                self._writer_pragmas(),
                self._seqs,
                on_notifications=self._committed,
                clock=self._clock,
                on_commit=self._checkpointer.committed,
            )
            await self._writer.start()
            self._reader_conn = await aiosqlite.connect(self._path, isolation_level=None)
            await self._reader_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await self._reader_conn.execute("PRAGMA query_only=1")
            # timeout=0: a point read must never wait on the event loop (see `_read_now`). A file
            # URI, so a path with '%', '#' or '?' in it names the same file as the others.
            self._point_conn = sqlite3.connect(
                f"{self._path.resolve().as_uri()}?mode=ro", uri=True, timeout=0, isolation_level=None
            )
            self._epoch = await self.get_or_create_meta("epoch", lambda: uuid.uuid4().hex)
        except BaseException:
            await self.close()
            raise

    def _writer_pragmas(self) -> list[str]:
        return [
            f"PRAGMA synchronous={self._synchronous}",
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA foreign_keys=ON",
            "PRAGMA cache_size=-65536",
            # The checkpointer copies the WAL into the file, so commits do not wait for that; the
            # writer still does it past this limit, the only checkpoint that can reset a WAL
            # under commits that never pause (see `checkpoint`).
            f"PRAGMA wal_autocheckpoint={self._wal_limit_pages}",
            # Deleted rows (purged notifications, revoked keys) are overwritten, not left on disk.
            "PRAGMA secure_delete=ON",
            # The statement journal (each insert can be undone alone) in memory: with 16 KiB pages
            # it passed SQLite's 64 KiB spill limit at four pages, and every transaction created,
            # wrote and unlinked a temporary file (a third of a single send's commit).
            "PRAGMA temp_store=MEMORY",
        ]

    async def _prepare_file(self) -> None:
        """WAL mode (it stays set in the file), migrations, and the counters the writer starts from."""
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # 16 KiB pages for a new file (an existing one keeps its own): a burst's rows touch fewer
            # B-tree pages, so inserts are cheaper (docs/performance.md).
            await conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            await conn.execute("PRAGMA journal_mode=WAL")
            await migrate(conn)
            (row,) = await conn.execute_fetchall("SELECT count(*), count(delivered_at) FROM notifications")
            (top,) = await conn.execute_fetchall(highest_seq_sql())
            undone = await conn.execute_fetchall(UNDONE_RANGES)
        finally:
            await conn.close()
        # Never hand out a seq again, even one whose row was purged or a restore undid: a client
        # may hold it as cursor.
        self._seqs.next_seq = int(top[0]) + 1
        self._undone = UndoneSeqs(tuple((int(r[0]), int(r[1])) for r in undone))
        self._stored_at_open, self._delivered = int(row[0]), int(row[1])

    async def close(self) -> None:
        """Commit everything queued, stop the writer and close both connections.

        Closing matters: aiosqlite keeps a non-daemon thread per connection, and an unclosed one
        keeps the process from exiting.
        """
        if self._closing:
            return
        self._closing = True
        if self._writer is not None:
            await self._writer.stop()
        if self._checkpointer is not None:
            await self._checkpointer.stop()
        if self._reader_conn is not None:
            await self._reader_conn.close()
        if self._point_conn is not None:
            self._point_conn.close()
        self._reader_conn = self._point_conn = None
        self._release_lock()

    def _take_lock(self) -> None:
        self._lock_fd = take_serving_lock(self._path)
        self._key_cache = serving_key_cache(self._lock_fd)

    def _release_lock(self) -> None:
        if self._key_cache is not None:
            self._key_cache.close()
            self._key_cache = None
        if self._lock_fd is not None:
            release_serving_lock(self._lock_fd)
            self._lock_fd = None

    # -- properties ------------------------------------------------------------------------

    @property
    def max_seq(self) -> int:
        """The highest seq committed, as this process knows it (the reads' upper bound)."""
        return self._seqs.last_committed

    async def last_seq(self) -> int:
        return self._seqs.last_committed

    @property
    def epoch(self) -> str:
        return self._epoch

    def undone_by_restore(self, seq: int) -> bool:
        return seq in self._undone

    def _now_stamp(self) -> str:
        return format_timestamp(self._clock.now())

    @property
    def path(self) -> Path:
        return self._path

    async def counts(self) -> StoreCounts:
        """From counters kept as the writer commits: a dashboard polls this, a count(*) would
        scan the table each time."""
        writer = self._writer
        if writer is None:
            return StoreCounts(stored=self._stored_at_open, delivered=self._delivered)
        stats = writer.stats
        return StoreCounts(
            stored=self._stored_at_open + stats.stored,
            delivered=self._delivered,
            commits=stats.commits,
            commit_failures=stats.failures,
            batch_sizes=stats.batch_sizes.snapshot(),
            commit_seconds=stats.commit_seconds.snapshot(),
        )

    async def check_writable(self) -> None:
        """Write one small row through the writer, as any send would: raises StoreError when the
        database cannot take a write now (disk full, I/O error, closed)."""
        await self._execute(
            "INSERT INTO meta (key, value) VALUES ('write_probe', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(self._now_stamp(),)],
        )

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._commit_listeners.append(listener)

    def _committed(self, notifications: list[Notification]) -> None:
        """Every listener hears of a commit, whatever another one did with it."""
        for listener in self._commit_listeners:
            try:
                listener(notifications)
            except Exception:
                log.exception("store.listener_failed")

    # -- writes ----------------------------------------------------------------------------

    @property
    def _w(self) -> GroupCommitWriter:
        if self._writer is None or self._closing:
            raise StoreClosed("the store is closed")
        return self._writer

    async def _execute(self, sql: str, params: list[tuple[Any, ...]]) -> int:
        return await self._w.execute((sql, params))

    async def _execute_all(
        self,
        statements: list[Statement],
        *,
        query: Query | None = None,
        on_commit: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> int:
        return await self._w.execute(*statements, query=query, on_commit=on_commit)

    def add_correction_listener(self, listener: CorrectionListener) -> None:
        self._correction_listeners.append(listener)

    def _corrected(self, correction: Correction) -> None:
        """A correction committed (called in commit order): it took a seq like a notification's,
        so the next one comes after it; every listener hears of it."""
        self._seqs.next_seq = max(self._seqs.next_seq, correction.seq + 1)
        for listener in self._correction_listeners:
            try:
                listener(correction)
            except Exception:
                log.exception("store.listener_failed")

    def _forget(self, deleted: int) -> None:
        """`deleted` notifications left the store (a retraction)."""
        self._stored_at_open -= deleted

    def _execute_nowait(
        self, sql: str, rows: Sequence[Sequence[Any]], on_rows: Callable[[int], None] | None = None
    ) -> None:
        """A bookkeeping write (delivery, last use, audit); dropped once the store is closing.

        `sql` takes one parameter, a JSON array of `rows` (see `store.sqlite.batch`).
        """
        if self._closing:
            return
        self._w.execute_nowait(sql, rows, on_rows)

    async def insert_notifications(
        self,
        drafts: Sequence[NotificationDraft],
        idempotency: IdempotencyClaim | None = None,
        *,
        lifetimes: Mapping[str, int] | None = None,
    ) -> list[Notification]:
        return await self._w.insert(drafts, idempotency, lifetimes or {})

    async def get_or_create_meta(self, key: str, default: Callable[[], str]) -> str:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", [(key, default())]
        )
        rows = await self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0])

    async def check(self) -> None:
        if self._writer is None or not self._writer.running:
            raise StoreUnavailable("the writer is not running")
        try:
            await self._read("SELECT 1", ())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the database is not answering ({type(exc).__name__})") from None

    async def flush(self) -> None:
        await self._w.flush()

    def set_commit_barrier(self, barrier: Callable[[], Awaitable[None]] | None) -> None:
        """Only this process writes the file, and its hub hears commits in order already."""

    # -- reads -----------------------------------------------------------------------------

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One statement, run to completion in one call on the reader's thread.

        Never execute-then-fetch in two calls: a statement left active between them keeps the
        connection's read transaction open, and every read queued meanwhile would join that old
        snapshot, missing commits the hub has already published (a resume would then have a gap).
        """
        conn = self._reader_conn
        if conn is None:
            raise StoreClosed("the store is closed")
        return [tuple(row) for row in await conn.execute_fetchall(sql, params)]

    async def _read_now(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """A point read by primary key, run right here on the event loop.

        Such a read takes a few microseconds from SQLite's page cache, where a round trip to the
        reader's thread costs about a hundred (and the GIL twice) on every API request. It never
        waits: if the database is busy (a checkpoint, another process), it goes to the reader.
        Like `_read`, it runs to completion, so it never holds a read transaction open.
        """
        conn = self._point_conn
        if conn is None:
            raise StoreClosed("the store is closed")
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return await self._read(sql, params)
