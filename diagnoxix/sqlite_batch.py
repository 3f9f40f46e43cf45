"""One group-commit transaction, run start to finish on the writer thread.

Each statement here is handed all its rows at once, as one JSON array that SQLite unpacks with
`json_each`. That is about the GIL, not about SQL: Python's `sqlite3` releases the GIL around every
step of every statement, and `executemany` steps once per row, so on a busy event loop each row
waited for the loop to hand the GIL back (measured on this machine: 20,000 rows took seconds
instead of a quarter of a second). One statement per kind of write needs the GIL a handful of
times per batch, whatever its size.

A statement that fails is undone alone (SQLite's statement-level rollback), so one refused write
never takes the rest of its batch with it; a write of several statements gets a SAVEPOINT.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("diagnoxix.store")

NOTIFICATION_COLUMNS = (
    "seq, id, user_id, type, title, message, data, priority, created_at, delivered_at, read_at, expires_at"
)
# ?1: the first seq; ?2: created_at; ?3: JSON array of
# [id, user_id, type, title, message, data (JSON text), priority, expires_at].
_INSERT_NOTIFICATIONS = (
    "INSERT INTO notifications (seq, id, user_id, type, title, message, data, priority, created_at,"
    " expires_at) SELECT ?1 + key, value->>0, value->>1, value->>2, value->>3, value->>4, value->>5,"
    " value->>6, ?2, value->>7 FROM json_each(?3)"
)
_CLAIM_TAKEN = "SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND key = ?"
_INSERT_CLAIM = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
    " created_at) VALUES (?,?,?,?,?,?)"
)
_MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM notifications"

Statement = tuple[str, list[tuple[Any, ...]]]


@dataclass(slots=True)
class InsertRows:
    """One Insert op's notifications: `count` rows as a JSON array, and its Idempotency-Key claim
    (without the notification ids, which the thread knows only once it is sure of the claim)."""

    count: int
    rows_json: str
    claim: tuple[str, str, str, int] | None  # api_key_id, key, request_hash, status
    ids_json: str


@dataclass(slots=True)
class BatchWork:
    next_seq: int
    created_at: str
    inserts: list[InsertRows] = field(default_factory=list)
    # Bookkeeping nobody waits for: (SQL taking one JSON array, that array), merged per SQL.
    bulk: list[tuple[str, str]] = field(default_factory=list)
    # Awaited writes: each its own statements, committed or undone together.
    executes: list[list[Statement]] = field(default_factory=list)


@dataclass(slots=True)
class BatchDone:
    """Per insert: its first seq, or None when its Idempotency-Key was taken already. Per bulk
    statement: rows changed (None: refused). Per execute: rows changed by its last statement, or
    the error."""

    first_seqs: list[int | None] = field(default_factory=list)
    bulk_rows: list[int | None] = field(default_factory=list)
    executed: list[int | sqlite3.Error] = field(default_factory=list)
    last_seq: int = 0


def run_batch(conn: sqlite3.Connection, work: BatchWork, last_seq: int) -> BatchDone:
    """BEGIN IMMEDIATE ... COMMIT. Raises only when the transaction as a whole failed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = _apply(conn, work, last_seq)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return done


def _apply(conn: sqlite3.Connection, work: BatchWork, last_seq: int) -> BatchDone:
    done = BatchDone()
    # The seq base is read inside the write transaction, so even a second process writing to the
    # same file (a CLI tool, an operator's mistake) cannot make two rows share a seq.
    (top,) = conn.execute(_MAX_SEQ).fetchone()
    first = seq = max(int(top), work.next_seq - 1, last_seq) + 1
    parts: list[str] = []
    claims: list[tuple[Any, ...]] = []
    claimed: set[tuple[str, str]] = set()
    for insert in work.inserts:
        if insert.claim is not None:
            api_key_id, key, request_hash, status = insert.claim
            # Under BEGIN IMMEDIATE nobody else can claim the key between this check and ours.
            if (api_key_id, key) in claimed or conn.execute(_CLAIM_TAKEN, (api_key_id, key)).fetchone():
                done.first_seqs.append(None)
                continue
            claimed.add((api_key_id, key))
            claims.append((api_key_id, key, request_hash, insert.ids_json, status, work.created_at))
        done.first_seqs.append(seq)
        seq += insert.count
        if insert.count:
            parts.append(insert.rows_json[1:-1])
    if parts:
        conn.execute(_INSERT_NOTIFICATIONS, (first, work.created_at, f"[{','.join(parts)}]"))
    if claims:
        conn.executemany(_INSERT_CLAIM, claims)
    done.last_seq = seq - 1
    for sql, rows_json in work.bulk:
        try:
            done.bulk_rows.append(conn.execute(sql, (rows_json,)).rowcount)
        except sqlite3.Error as exc:
            _still_in_transaction(conn)
            # Nobody waits for these; a refused one must not take the batch's notifications.
            log.error("store.bookkeeping_failed", extra={"error": type(exc).__name__})
            done.bulk_rows.append(None)
    for statements in work.executes:
        try:
            with _savepoint(conn, len(statements) > 1):
                rowcount = 0
                for sql, params in statements:
                    rowcount = conn.executemany(sql, params).rowcount
        except sqlite3.Error as exc:
            _still_in_transaction(conn)
            done.executed.append(exc)
            continue
        done.executed.append(rowcount)
    return done


def _still_in_transaction(conn: sqlite3.Connection) -> None:
    """Some errors (disk full, I/O) make SQLite roll back the whole transaction: then fail the
    whole batch rather than let the next statements commit on their own."""
    if not conn.in_transaction:
        raise sqlite3.OperationalError("the transaction was rolled back")


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
