"""`run.py restore`: put a backup in place of a stopped server's database, keeping the old one.

In order, so that a failure at any step leaves the database as it was:
1. take the serving lock beside the database (`files.take_serving_lock`): a running server holds
   it, so a restore under a live server is refused, and no server can start during the restore;
2. copy the backup beside the database (owner-only) and verify the copy: integrity check, a
   schema this release knows;
3. learn the highest seq the database being replaced had handed out (`restores`), migrate the
   copy, and record the restore in it: the seqs after the backup's newest one, up to that highest
   one, were seen by clients and are gone; the next seq becomes the restored server's first
   cursor, and new seqs start after it;
4. fsync the copy, move the database and its -wal/-shm aside as `<db>.before-restore-<time>`
   (never deleted: an operator may need what was in it), rename the copy into place, fsync the
   directory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path

from diagnoxix.clock import Clock
from diagnoxix.models import format_timestamp
from diagnoxix.store.protocols import BackupError, BackupReport, RestoreReport, StoreError
from diagnoxix.store.sqlite.backup import BUSY_TIMEOUT_SECONDS, copy_database, describe, verify_copy
from diagnoxix.store.sqlite.files import (
    create_private_empty,
    fsync_directory,
    fsync_file,
    partial_path,
    release_serving_lock,
    remove_quietly,
    take_serving_lock,
)
from diagnoxix.store.sqlite.migrations import migrate_now
from diagnoxix.store.sqlite.restores import highest_seq

# When the database being replaced cannot tell which seqs its clients saw (it is gone, unreadable,
# or another database), new seqs start this far beyond the backup's newest: a trillion
# notifications, over 30 years at a sustained thousand a second. Seqs stay far below 2**53, the
# largest integer a browser holds exactly.
UNKNOWN_HISTORY_SEQS = 10**12
# SQLite's files for one database; all of them move aside together.
_DATABASE_FILES = ("", "-wal", "-shm", "-journal")


def restore_database(backup: Path, db: Path, *, clock: Clock) -> RestoreReport:
    """Replace `db` by a verified copy of `backup`; raises BackupError with one line saying why not."""
    started = time.monotonic()
    if backup.exists() and db.exists() and os.path.samefile(backup, db):
        raise BackupError(f"{backup} is the database itself: restore from a backup file")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create the directory {db.parent}: {describe(exc)}") from None
    lock = _lock(db)
    partial = partial_path(db, "restore")
    try:
        create_private_empty(partial)
        copy_database(backup, partial, what="the backup")
        facts = verify_copy(partial, shown_as=f"the backup {backup}")
        size = partial.stat().st_size
        replaced = _highest_seq_handed_out(db, facts.epoch)
        after = facts.last_seq
        cursor = (max(after, replaced) if replaced is not None else after + UNKNOWN_HISTORY_SEQS) + 1
        now = clock.now()
        aside = _aside_name(db, now) if db.exists() else None
        _record_restore(partial, after, cursor, now, backup, aside)
        fsync_file(partial)
        if aside is not None:
            _rename_files(db, aside)
        try:
            os.replace(partial, db)
        except OSError:
            if aside is not None:
                _rename_files(aside, db)
            raise
        fsync_directory(db.parent)
    except OSError as exc:
        raise BackupError(f"cannot restore into {db}: {describe(exc)}") from None
    except sqlite3.Error as exc:
        raise BackupError(f"cannot restore into {db}: {exc}") from None
    finally:
        remove_quietly(partial, Path(f"{partial}-journal"))
        release_serving_lock(lock)
    report = BackupReport(
        path=backup,
        size_bytes=size,
        schema_version=facts.schema_version,
        notifications=facts.notifications,
        last_seq=after,
        seconds=time.monotonic() - started,
    )
    return RestoreReport(
        backup=report,
        db_path=db,
        kept_aside=aside,
        first_cursor=cursor,
        history_known=replaced is not None,
    )


def _lock(db: Path) -> int:
    try:
        return take_serving_lock(db)
    except StoreError:
        raise BackupError(f"a Diagnoxix Notify server is running on {db}: stop it before restoring") from None
    except OSError as exc:
        raise BackupError(f"cannot lock {db}: {describe(exc)}") from None


def _highest_seq_handed_out(db: Path, backup_epoch: str | None) -> int | None:
    """The highest seq the database at `db` handed out, if it is the backup's own database (the
    same epoch) and can be read; None when what its clients saw is unknown."""
    if not db.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            if epoch is None or backup_epoch is None or str(epoch[0]) != backup_epoch:
                return None
            return highest_seq(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        # Corrupt, or not a database at all: as if it were gone.
        return None


def _record_restore(
    path: Path, after: int, cursor: int, now: datetime, backup: Path, aside: Path | None
) -> None:
    """Bring the copy to this release's schema and record the restore in it (and in its audit log)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate_now(conn)
        stamp = format_timestamp(now)
        details: dict[str, object] = {"backup_last_seq": after, "first_cursor": cursor}
        if aside is not None:
            details["kept_aside"] = aside.name
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO restores (restored_at, after_seq, cursor_seq) VALUES (?, ?, ?)",
            (stamp, after, cursor),
        )
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, details)"
            " VALUES (?, 'cli', 'store.restore', ?, ?)",
            (stamp, backup.name, json.dumps(details)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _aside_name(db: Path, now: datetime) -> Path:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    candidate = db.with_name(f"{db.name}.before-restore-{stamp}")
    n = 1
    while any(Path(f"{candidate}{suffix}").exists() for suffix in _DATABASE_FILES):
        n += 1
        candidate = db.with_name(f"{db.name}.before-restore-{stamp}-{n}")
    return candidate


def _rename_files(db: Path, new_name: Path) -> None:
    """A database with its WAL and shared memory, under a new name (so it still opens as it was).
    None of them may stay behind: SQLite would apply an old WAL to the restored file."""
    for suffix in _DATABASE_FILES:
        source = Path(f"{db}{suffix}")
        if source.exists():
            os.rename(source, Path(f"{new_name}{suffix}"))
