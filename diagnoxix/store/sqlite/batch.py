"""One group-commit transaction, run on the writer thread.

The event loop feeds a transaction in steps (`begin`, `insert` per chunk of notifications,
`finish`), each queued to the writer thread as soon as it is ready, so SQLite stores one chunk
while the loop prepares the next. Only the writer thread ever touches a `Transaction`.

Each statement is handed all its rows at once, as one JSON array that SQLite unpacks with
`json_each`. That is about the GIL, not about SQL: Python's `sqlite3` releases the GIL around every
step of every statement, and `executemany` steps once per row, so on a busy event loop each row
waits for the loop to hand the GIL back: a hundred times slower than one statement
(docs/performance.md). One statement per kind of write needs the GIL a handful of times per
batch, whatever its size.

A statement that fails is undone alone (SQLite's statement-level rollback), so one refused write
never takes the rest of its batch with it; a write of several statements gets a SAVEPOINT.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from diagnoxix.store.staging import InsertRows

log = logging.getLogger("diagnoxix.store")

NOTIFICATION_COLUMNS = (
    "seq, id, user_id, type, title, message, data, priority, created_at, delivered_at, read_at, expires_at,"
    " links"
)
# ?1: the first seq; ?2: created_at; ?3: a JSON array of rows, each
# [id, user_id, type, title, message, data (JSON text), priority, expires_at, links (JSON text)].
_INSERT_NOTIFICATIONS = (
    "INSERT INTO notifications (seq, id, user_id, type, title, message, data, priority, created_at,"
    " expires_at, links) SELECT ?1 + key, value->>0, value->>1, value->>2, value->>3, value->>4,"
    " value->>5, value->>6, ?2, value->>7, value->>8 FROM json_each(?3)"
)
_CLAIM_TAKEN = "SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND key = ?"
_INSERT_CLAIM = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
    " created_at) VALUES (?,?,?,?,?,?)"
)
# Corrections take seqs from the same counter (store.sqlite.corrections).
_MAX_SEQ = (
    "SELECT max(coalesce((SELECT max(seq) FROM notifications), 0),"
    " coalesce((SELECT max(seq) FROM corrections), 0))"
)

Statement = tuple[str, list[tuple[Any, ...]]]
# A read inside the transaction, after a write's statements: (sql, parameters).
Query = tuple[str, tuple[Any, ...]]


@dataclass(slots=True)
class BatchDone:
    """Per insert (in order): its first seq, None when its Idempotency-Key was taken already, or
    the error that refused it alone.
    Per bulk statement: rows changed (None: refused). Per execute: rows changed by its last
    statement, or the error, and the rows its query read (empty without one, or on an error)."""

    first_seqs: list[int | Exception | None] = field(default_factory=list)
    bulk_rows: list[int | None] = field(default_factory=list)
    executed: list[int | sqlite3.Error] = field(default_factory=list)
    queried: list[list[tuple[Any, ...]]] = field(default_factory=list)
    last_seq: int = 0


class Transaction:
    """BEGIN IMMEDIATE, inserts in chunks, bookkeeping, COMMIT.

    `begin` and `insert` never raise: a failure is kept and `finish` rolls back and raises it, so
    the loop can queue every step without waiting for any but the last.
    """

    def __init__(self, conn: sqlite3.Connection, next_seq: int, created_at: str) -> None:
        self._conn = conn
        self._seq = next_seq
        self._created_at = created_at
        self._claimed: set[tuple[str, str]] = set()
        self._claims: list[tuple[Any, ...]] = []
        self._failed: BaseException | None = None
        self.done = BatchDone()

    def begin(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            # The seq base is read inside the write transaction, so even a second process
            # writing to the same file (a CLI tool, an operator's mistake) cannot make two rows
            # share a seq.
            (top,) = self._conn.execute(_MAX_SEQ).fetchone()
            self._seq = max(int(top) + 1, self._seq)
        except BaseException as exc:
            self._failed = exc

    def insert(self, inserts: list[InsertRows]) -> None:
        if self._failed is not None:
            return
        try:
            self._insert(inserts)
        except BaseException as exc:
            self._failed = exc

    def _insert(self, inserts: list[InsertRows]) -> None:
        conn, done = self._conn, self.done
        accepted: list[tuple[int, InsertRows]] = []  # (index in done.first_seqs, insert)
        for insert in inserts:
            if insert.claim is not None:
                api_key_id, key, _hash, _status = insert.claim
                # Under BEGIN IMMEDIATE nobody else can claim the key between this check and ours.
                taken = (api_key_id, key) in self._claimed
                if taken or conn.execute(_CLAIM_TAKEN, (api_key_id, key)).fetchone():
                    done.first_seqs.append(None)
                    continue
                self._claimed.add((api_key_id, key))
            accepted.append((len(done.first_seqs), insert))
            done.first_seqs.append(None)  # set below
        rows = [insert for _, insert in accepted if insert.count]
        first = self._seq
        try:
            if rows:
                joined = ",".join(insert.rows_json[1:-1] for insert in rows)
                conn.execute(_INSERT_NOTIFICATIONS, (first, self._created_at, f"[{joined}]"))
        except (sqlite3.Error, UnicodeEncodeError):
            # Refused by SQLite, or text SQLite cannot take (a lone surrogate from a caller that
            # skipped validation) while binding the statement.
            _still_in_transaction(conn)
            # Find the culprit: each insert on its own, so the others are still stored.
            self._insert_one_by_one(accepted)
            return
        for index, insert in accepted:
            done.first_seqs[index] = self._seq
            self._seq += insert.count
            self._claim(insert)

    def _insert_one_by_one(self, accepted: list[tuple[int, InsertRows]]) -> None:
        conn, done = self._conn, self.done
        for index, insert in accepted:
            try:
                with _savepoint(conn, True):
                    if insert.count:
                        conn.execute(_INSERT_NOTIFICATIONS, (self._seq, self._created_at, insert.rows_json))
            except (sqlite3.Error, UnicodeEncodeError) as exc:
                _still_in_transaction(conn)
                done.first_seqs[index] = exc
                if insert.claim is not None:
                    self._claimed.discard(insert.claim[:2])
                continue
            done.first_seqs[index] = self._seq
            self._seq += insert.count
            self._claim(insert)

    def _claim(self, insert: InsertRows) -> None:
        if insert.claim is not None:
            api_key_id, key, request_hash, status = insert.claim
            self._claims.append((api_key_id, key, request_hash, insert.ids_json, status, self._created_at))

    def finish(
        self, bulk: list[tuple[str, str]], executes: list[tuple[list[Statement], Query | None]]
    ) -> BatchDone:
        """Bookkeeping (SQL taking one JSON array, that array), awaited writes (each with what
        its query reads back), COMMIT."""
        conn, done = self._conn, self.done
        try:
            if self._failed is not None:
                raise self._failed
            if self._claims:
                conn.executemany(_INSERT_CLAIM, self._claims)
            for sql, rows_json in bulk:
                try:
                    done.bulk_rows.append(conn.execute(sql, (rows_json,)).rowcount)
                except _REFUSED as exc:
                    _still_in_transaction(conn)
                    # Nobody waits for these; a refused one must not take the batch's notifications.
                    log.error("store.bookkeeping_failed", extra={"error": type(exc).__name__})
                    done.bulk_rows.append(None)
            for statements, query in executes:
                try:
                    # Several statements, or one with several rows: all or nothing.
                    with _savepoint(conn, len(statements) > 1 or len(statements[0][1]) > 1):
                        rowcount = 0
                        for sql, params in statements:
                            rowcount = conn.executemany(sql, params).rowcount
                        rows = conn.execute(*query).fetchall() if query is not None else []
                except _REFUSED as exc:
                    _still_in_transaction(conn)
                    done.executed.append(_as_sqlite_error(exc))
                    done.queried.append([])
                    continue
                done.executed.append(rowcount)
                done.queried.append([tuple(row) for row in rows])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        done.last_seq = self._seq - 1
        return done

    def abandon(self) -> None:
        """Roll back: the loop could not prepare the rest of the batch."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


@dataclass(slots=True)
class Opening:
    """A batch's transaction, begun on the writer thread by the first of its steps to run there
    (`writer.GroupCommitWriter._begin`): a batch of one chunk (every single send) takes one step,
    begin to commit, not three."""

    begin: Callable[[], Transaction]
    begun: Transaction | None = None

    def __call__(self) -> Transaction:
        if self.begun is None:
            self.begun = self.begin()
        return self.begun


def _still_in_transaction(conn: sqlite3.Connection) -> None:
    """Some errors (disk full, I/O) make SQLite roll back the whole transaction: then fail the
    whole batch rather than let the next statements commit on their own."""
    if not conn.in_transaction:
        raise sqlite3.OperationalError("the transaction was rolled back")


# What one write can meet that is its own alone: SQLite refusing it, or a value the sqlite3 module
# cannot bind (text with a lone surrogate raises UnicodeEncodeError, a ValueError; an integer
# past 64 bits OverflowError) from a caller that skipped validation. Neither may fail the batch.
_REFUSED = (sqlite3.Error, ValueError, OverflowError)


def _as_sqlite_error(exc: Exception) -> sqlite3.Error:
    if isinstance(exc, sqlite3.Error):
        return exc
    return sqlite3.InterfaceError(f"a value could not be bound ({type(exc).__name__})")


@contextlib.contextmanager
def _savepoint(conn: sqlite3.Connection, needed: bool) -> Iterator[None]:
    if not needed:
        yield
        return
    conn.execute("SAVEPOINT op")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        raise
    conn.execute("RELEASE op")
