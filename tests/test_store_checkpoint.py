"""The WAL is copied into the database file by the checkpointer, never inside a commit.

Each test reads the database file alone (a copy without its -wal file): what it holds is what has
been checkpointed, since a commit only appends to the WAL.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

from diagnoxix.models import NotificationDraft
from diagnoxix.store.sqlite.store import SqliteStore

# About 2 KiB a row: 12,000 rows fill the WAL well past the 1,000 pages (16 MiB) at which SQLite
# would otherwise checkpoint inside the commit.
_FILLER = {"text": "x" * 2000}


def _drafts(count: int, data: dict[str, str] | None = None) -> list[NotificationDraft]:
    return [
        NotificationDraft(
            user_id=f"u{i % 50}", type="custom", title="t", message="m", data=data or {}, priority="normal"
        )
        for i in range(count)
    ]


def _rows_in_file_alone(path: Path, tmp: Path) -> int:
    copy = tmp / "file-alone.sqlite3"
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as conn:
        (count,) = conn.execute("SELECT count(*) FROM notifications").fetchone()
    copy.unlink()
    return int(count)


async def _rows_in_file_soon(path: Path, tmp: Path, expected: int) -> int:
    """The rows the file alone holds once it holds `expected`, or after 5 s, whichever is first."""
    for _ in range(100):
        count = _rows_in_file_alone(path, tmp)
        if count == expected:
            return count
        await asyncio.sleep(0.05)
    return _rows_in_file_alone(path, tmp)


async def test_a_commit_that_fills_the_wal_does_not_checkpoint_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3", checkpoint_delay=3600)
    await store.open()
    try:
        for _ in range(3):
            await store.insert_notifications(_drafts(4000, _FILLER))
        wal = Path(f"{store.path}-wal")
        assert wal.stat().st_size > 16 * 1024 * 1024  # past SQLite's own autocheckpoint point
        assert _rows_in_file_alone(store.path, tmp_path) == 0
    finally:
        await store.close()
    # Closing the last connection checkpoints the rest: the file alone then holds everything.
    assert _rows_in_file_alone(tmp_path / "s.sqlite3", tmp_path) == 12_000


async def test_the_checkpointer_copies_commits_into_the_file_soon_after(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3", checkpoint_delay=0.05)
    await store.open()
    try:
        await store.insert_notifications(_drafts(100))
        assert await _rows_in_file_soon(store.path, tmp_path, 100) == 100
        # And again after a later commit: one checkpoint is not the last.
        await store.insert_notifications(_drafts(50))
        assert await _rows_in_file_soon(store.path, tmp_path, 150) == 150
    finally:
        await store.close()


async def test_the_wal_stays_bounded_while_commits_never_pause(tmp_path: Path) -> None:
    # A PASSIVE checkpoint copies the WAL only up to where it stood when it began; while commits
    # keep coming, the log is never all copied, so it is never reset and would grow without end.
    # The writer checkpoints itself once the WAL passes its limit (here 64 pages, 1 MiB).
    store = SqliteStore(tmp_path / "s.sqlite3", checkpoint_delay=0.01, wal_limit_pages=64)
    await store.open()
    wal = Path(f"{store.path}-wal")
    largest = 0
    try:
        for _ in range(30):  # about 20 MiB of rows, back to back
            await store.insert_notifications(_drafts(500, {"text": "x" * 1000}))
            largest = max(largest, wal.stat().st_size)
    finally:
        await store.close()
    assert largest < 8 * 1024 * 1024, largest
    assert _rows_in_file_alone(tmp_path / "s.sqlite3", tmp_path) == 15_000
