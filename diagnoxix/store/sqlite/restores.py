"""Seqs across a restore from backup: the highest one a database has handed out, and the ranges a
restore undid (the `restores` table, db/migrations/0006_restores.sql).

A restored database is behind what its clients saw. The seqs after the backup's newest one, up to
the highest the replaced database had handed out, named notifications that are gone: a client may
hold one as its cursor. The restore records the range with one seq past it (the cursor seq), which
nothing was ever given: the restored server's first cursor. New seqs start after it, so a seq
never names two notifications; a cursor inside the range is answered `recovered: false`
(`delivery.resume`), and the cursor seq itself, which a client adopts from that answer, is not in
the range.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# Every seq a database has handed out is at most this: its newest notification, a purged one
# (`purge_marks`), one a restore undid, or a correction's (a retracted notification's is below
# it). The writer starts after it; `run.py restore` reads it from the database it replaces.
_HANDED_OUT = {
    "notifications": "SELECT coalesce(max(seq), 0) FROM notifications",
    "purge_marks": "SELECT coalesce(max(purged_through), 0) FROM purge_marks",
    "restores": "SELECT coalesce(max(cursor_seq), 0) FROM restores",
    # A correction's own seq (db/migrations/0009_corrections.sql), past its notification's.
    "corrections": "SELECT coalesce(max(seq), 0) FROM corrections",
}
UNDONE_RANGES = "SELECT after_seq, cursor_seq FROM restores"


def highest_seq_sql(tables: set[str] | None = None) -> str:
    """One statement answering the highest seq handed out, from the tables present (a database
    from before a migration lacks some); all of them by default."""
    parts = [f"({sql})" for table, sql in _HANDED_OUT.items() if tables is None or table in tables]
    # SQLite's max() of several arguments wants at least two.
    return "SELECT max(" + ", ".join([*parts, "0", "0"]) + ")"


def highest_seq(conn: sqlite3.Connection) -> int:
    """The highest seq the database on `conn` has handed out, whatever its schema version."""
    tables = {str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    (top,) = conn.execute(highest_seq_sql(tables)).fetchone()
    return int(top)


@dataclass(frozen=True, slots=True)
class UndoneSeqs:
    """The seqs restores undid: after_seq < seq < cursor_seq for each (after_seq, cursor_seq).
    Loaded when the store opens (a restore runs only while no server does)."""

    ranges: tuple[tuple[int, int], ...] = ()

    def __contains__(self, seq: int) -> bool:
        return any(after < seq < cursor for after, cursor in self.ranges)
