"""The database file on disk: created private, and held by one serving process at a time."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from diagnoxix.store.protocols import StoreError

log = logging.getLogger("diagnoxix.store")


def create_private_file(path: Path) -> None:
    """Create the file owner-only before SQLite opens it (SQLite gives -wal/-shm the same mode).

    It holds health information and the server secret; a file created under the usual umask
    would be world-readable, at least for a moment.
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("store.file_permissions", extra={"path": str(path), "advice": "chmod 600"})


def take_serving_lock(path: Path) -> int:
    """Lock the file beside the database for this process; returns the descriptor holding it.

    A serving process's hub sees only what its own writer commits, so two servers on one file
    would each miss the other's notifications: the second is refused.
    """
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"another Diagnoxix Notify server is already using {path}; stop it or pass a different --db"
        ) from None
    return fd


def release_serving_lock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the flock


def partial_path(beside: Path, purpose: str) -> Path:
    """A name next to `beside` for a file being written, to be renamed over it when complete:
    hidden, and this process's own (two commands never share one)."""
    return beside.with_name(f".{beside.name}.{purpose}-{os.getpid()}.partial")


def create_private_empty(path: Path) -> None:
    """A new empty file, owner-only from the first moment (it will hold patient data)."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (POSIX: the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(*paths: Path) -> None:
    """Remove what a failed command left behind, whether or not it got that far."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
