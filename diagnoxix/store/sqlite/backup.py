"""`run.py backup`: a consistent, verified copy of a live database while its server keeps writing.

The copy is SQLite's online backup API in ONE step: one read transaction, so one consistent
snapshot, copied page by page. Why not in steps of a few pages (docs/operations.md has the
figures): the backup API starts again from the first page whenever another connection writes
between two steps, and the server, in its own process, commits every few milliseconds under
load, so a paged backup restarted thousands of times and did not finish in a minute. Steps exist
so a rollback-journal writer is not locked out meanwhile; in WAL mode a reader never blocks the
writer, so one step starves nobody: the WAL only grows for the second or so the copy holds its
snapshot. VACUUM INTO also reads one snapshot, but rebuilds every table and index: 5-7 times
slower for the same database.

The copy is written under a hidden name beside the destination, created owner-only (it holds
patient data), switched out of WAL mode so it is one self-contained file, checked (SQLite's
integrity check, a schema version this release knows), fsynced, and only then given its name:
a destination never holds half a backup.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from diagnoxix.store.protocols import BackupError, BackupReport
from diagnoxix.store.sqlite.files import (
    create_private_empty,
    fsync_directory,
    fsync_file,
    partial_path,
    remove_quietly,
)
from diagnoxix.store.sqlite.migrations import discover
from diagnoxix.store.sqlite.restores import highest_seq

# How long opening the live database may wait on a lock (a checkpoint, a schema change).
BUSY_TIMEOUT_SECONDS = 5.0
# The files SQLite keeps beside a database; none of them may be a backup's destination.
COMPANIONS = ("", "-wal", "-shm", "-journal", ".lock")


@dataclass(frozen=True, slots=True)
class CopyFacts:
    """What a verified copy holds."""

    schema_version: int
    notifications: int
    last_seq: int
    epoch: str | None


def backup_database(db: Path, destination: Path, *, force: bool) -> BackupReport:
    """Copy `db` to `destination`, verified; raises BackupError with one line saying why not."""
    started = time.monotonic()
    partial = partial_path(destination, "backup")
    try:
        _check_destination(db, destination, force=force)
        create_private_empty(partial)
        copy_database(db, partial, what="the database")
        facts = verify_copy(partial, shown_as=f"the copy of {db}")
        fsync_file(partial)
        _publish(partial, destination, force=force)
        fsync_directory(destination.parent)
        size = destination.stat().st_size
    except OSError as exc:
        raise BackupError(f"cannot write the backup {destination}: {describe(exc)}") from None
    finally:
        remove_quietly(partial, Path(f"{partial}-journal"))
    return BackupReport(
        path=destination,
        size_bytes=size,
        schema_version=facts.schema_version,
        notifications=facts.notifications,
        last_seq=facts.last_seq,
        seconds=time.monotonic() - started,
    )


def copy_database(source: Path, target: Path, *, what: str) -> None:
    """One consistent snapshot of `source` into the empty file `target`, as a rollback-journal
    database (one file). `what` names the source in an error ("the database", "the backup")."""
    if not source.is_file():
        raise BackupError(f"there is no {what.removeprefix('the ')} {source}")
    try:
        src = sqlite3.connect(_read_only_uri(source), uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            src.close()
            raise
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read {what} {source}: {exc}") from None
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: all of it in one step, from one snapshot (see above)
            # The pages carry the source's WAL flag; a backup is one file, readable anywhere.
            dst.execute("PRAGMA journal_mode=DELETE").fetchall()
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {what} {source} to {target.parent}: {exc}") from None
    finally:
        src.close()


def verify_copy(path: Path, *, shown_as: str) -> CopyFacts:
    """SQLite's integrity check and a Diagnoxix Notify schema this release knows, or BackupError."""
    known = len(discover())
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            problems = [str(row[0]) for row in conn.execute("PRAGMA integrity_check").fetchall()]
            if problems != ["ok"]:
                raise BackupError(f"{shown_as} fails SQLite's integrity check: {problems[0]}")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if not 1 <= int(version) <= known:
                raise BackupError(
                    f"{shown_as} is not a Diagnoxix Notify database this release can use"
                    f" (schema version {version}; this release knows 1 to {known})"
                )
            (count,) = conn.execute("SELECT count(*) FROM notifications").fetchone()
            epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            return CopyFacts(int(version), int(count), highest_seq(conn), str(epoch[0]) if epoch else None)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{shown_as} is not a usable Diagnoxix Notify database: {exc}") from None


def describe(exc: OSError) -> str:
    """An OSError as an operator reads it: 'No space left on device', not errno 28 and a path."""
    return exc.strerror or str(exc)


def _read_only_uri(path: Path) -> str:
    # A file URI, so a path with '%', '#' or '?' in it names the same file.
    return f"{path.resolve().as_uri()}?mode=ro"


def _check_destination(db: Path, destination: Path, *, force: bool) -> None:
    if destination.is_dir():
        raise BackupError(
            f"{destination} is a directory: name the backup file, e.g. {destination / 'notify.sqlite3'}"
        )
    if not destination.parent.is_dir():
        raise BackupError(f"the directory {destination.parent} does not exist")
    target = destination.resolve()
    if any(target == Path(f"{db.resolve()}{suffix}") for suffix in COMPANIONS):
        raise BackupError(f"{destination} is the database itself (or one of its files): back up elsewhere")
    if destination.exists() and not force:
        raise BackupError(f"{destination} already exists: pass --force to replace it")


def _publish(partial: Path, destination: Path, *, force: bool) -> None:
    """Give the finished copy its name: replacing an existing file only with `force`."""
    if force:
        os.replace(partial, destination)
        return
    try:
        # A hard link refuses an existing name atomically, even one created a moment ago.
        os.link(partial, destination)
    except FileExistsError:
        raise BackupError(f"{destination} already exists: pass --force to replace it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename.
        if destination.exists():
            raise BackupError(f"{destination} already exists: pass --force to replace it") from None
        os.rename(partial, destination)
