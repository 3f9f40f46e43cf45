"""The database file on disk: created private, and held by one serving process at a time."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
from pathlib import Path

from diagnoxix.store.key_cache import KeyCache
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


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def take_serving_lock(path: Path) -> int:
    """Lock the file beside the database for this process; returns the descriptor holding it.

    A serving process's hub sees only what its own writer commits, so two servers on one file
    would each miss the other's notifications: the second is refused.
    """
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
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


# The lock file also tells the serving process of API-key revocations, for its cache of keys
# (`store.key_cache`): whoever revokes one (a command on the same database, the server
# itself) writes fresh random bytes at the start of the file once the revocation is committed,
# and the server, which keeps those bytes mapped into its memory, compares them before it trusts
# what it remembers: a memory read per request, not a system call. Nothing else writes the file,
# and flock ignores its content.
REVOCATION_MARK_BYTES = 8


def signal_key_revoked(path: Path) -> None:
    """Tell a process serving this database that an API key was revoked (raises OSError)."""
    fd = os.open(_lock_path(path), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, os.urandom(REVOCATION_MARK_BYTES), 0)
    finally:
        os.close(fd)


class RevocationMark:
    """The revocation bytes of the lock file held by `lock_fd`, mapped read-only."""

    def __init__(self, lock_fd: int) -> None:
        if os.fstat(lock_fd).st_size < REVOCATION_MARK_BYTES:
            os.ftruncate(lock_fd, REVOCATION_MARK_BYTES)  # a file from before: never shrunk
        self._map = mmap.mmap(lock_fd, REVOCATION_MARK_BYTES, prot=mmap.PROT_READ)

    def current(self) -> bytes:
        return self._map[:REVOCATION_MARK_BYTES]

    def close(self) -> None:
        self._map.close()


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


def serving_key_cache(lock_fd: int) -> KeyCache:
    """The cache of keys of a process that holds the serving lock (`take_serving_lock`)."""
    return KeyCache(RevocationMark(lock_fd))
