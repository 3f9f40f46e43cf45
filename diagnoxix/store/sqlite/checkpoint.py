"""Copies the write-ahead log back into the database file, away from the commit that waits for it.

By default SQLite checkpoints inside a commit: the commit that takes the WAL past 1,000 pages also
copies every page into the database file and fsyncs it, and the notifications it carries wait for
that before they are sent: most of such a commit's time. This checkpointer, on a connection and a
thread of its own, runs a PASSIVE checkpoint a moment after commits instead: it never blocks the
writer or a reader, and never makes a commit wait.

A PASSIVE checkpoint copies the WAL only as far as it reached when the checkpoint began, and SQLite
restarts the WAL from its beginning only once all of it has been copied. Under commits that never
pause, that never happens, and the WAL would grow without end. So the writer keeps SQLite's own
checkpoint as a backstop, at `WAL_LIMIT_PAGES` (64 MiB with 16 KiB pages) instead of 1,000: a burst
of 20,000 stays under it, and a commit pays for a checkpoint only under sustained load.

A commit schedules one checkpoint after `delay` seconds, which covers every commit made
meanwhile; one made while a checkpoint runs schedules the next. A checkpoint that fails is logged
and retried after the next commit: the WAL then only grows meanwhile, and nothing is lost, since
every committed page is in the WAL already.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("diagnoxix.store")

# Long enough that a burst's commits share one checkpoint, short enough that the WAL stays small
# (at 1,000 notifications/s, 4 checkpoints a second).
CHECKPOINT_DELAY_SECONDS = 0.25
# The writer checkpoints itself once the WAL holds this many pages (see above).
WAL_LIMIT_PAGES = 4000


class Checkpointer:
    """Start it once after the writer, stop it once after the writer has stopped."""

    def __init__(self, path: Path, *, busy_timeout_ms: int, delay: float = CHECKPOINT_DELAY_SECONDS) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._delay = delay
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diagnoxix-checkpoint")
        # Touched only on the checkpoint thread.
        self._conn: sqlite3.Connection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None
        # A commit arrived while a checkpoint ran: it needs the next one.
        self._again = False
        self._stopped = False
        self.checkpoints = 0

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)

    def committed(self) -> None:
        """The writer committed: make sure a checkpoint follows. Cheap; call it after every commit."""
        if self._stopped:
            return
        if self._running is not None:
            self._again = True
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._begin)

    async def stop(self) -> None:
        """Let a running checkpoint end, skip a scheduled one, close the connection and the thread.

        Closing the last connection to the file checkpoints whatever is left.
        """
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        closed = self._executor.submit(self._disconnect)
        self._executor.shutdown(wait=False)
        await asyncio.wrap_future(closed)

    def _begin(self) -> None:
        self._timer = None
        self._again = False
        self._running = asyncio.get_running_loop().create_task(self._run(), name="diagnoxix-checkpoint")

    async def _run(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint)
            self.checkpoints += 1
        except sqlite3.Error as exc:
            log.warning("store.checkpoint_failed", extra={"error": type(exc).__name__, "detail": str(exc)})
        except Exception:  # a background job: log it, never let it end anything else
            log.exception("store.checkpoint_failed")
        finally:
            self._running = None
        if self._again:
            self.committed()

    # -- the checkpoint thread's side ----------------------------------------------------------

    def _connect(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._busy_timeout_ms / 1000)
        self._conn = conn

    def _checkpoint(self) -> None:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the checkpointer's connection is closed")
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
