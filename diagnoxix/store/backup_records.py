"""The records of backups and restores (`run.py backup`, `run.py restore`): what was copied."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class BackupReport:
    """A verified copy of a database (`run.py backup`, and a backup checked by `run.py restore`)."""

    path: Path
    size_bytes: int
    schema_version: int
    notifications: int
    # The highest seq the copied database had handed out (a purged or restored one included).
    last_seq: int
    seconds: float


@dataclass(frozen=True, slots=True)
class RestoreReport:
    backup: BackupReport
    db_path: Path
    # Where the database the backup replaced was moved (with its -wal/-shm); None: there was none.
    kept_aside: Path | None
    # A seq past every one the replaced database could have handed out, given to nothing: the
    # restored server's first cursor (a welcome's last_seq). New seqs start after it.
    first_cursor: int
    # False: the replaced database was missing, unreadable or another one, so the seqs its
    # clients saw are unknown and the new ones start a safe distance beyond the backup's.
    history_known: bool
