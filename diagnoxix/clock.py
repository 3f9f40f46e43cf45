"""The time the service reads: the system's, or one a test (or a simulation) moves by hand.

Whatever is decided by time (expiry and retention now; scheduled sends and escalation steps later)
reads it from a `Clock` handed in at assembly, so a test of a one-hour expiry or a five-minute
escalation step moves the clock instead of waiting.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

# A system clock's sleep wakes at least this often to read the time again: a clock set forward
# (NTP after a suspend) must not leave a deadline waiting for the old interval to run out.
MAX_SLEEP_SECONDS = 60.0


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once `now()` has reached `deadline` (at once if it has). Cancellable."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, deadline: datetime) -> None:
        # Reading the wall clock again after each nap is the point: no event marks a deadline.
        while (left := (deadline - self.now()).total_seconds()) > 0:  # noqa: ASYNC110 - see above
            await asyncio.sleep(min(left, MAX_SLEEP_SECONDS))


class ManualClock:
    """Stands still until moved: `advance(seconds)`. Starts at the real time unless told.

    `sleep_until` waits, without any real waiting, until an `advance` reaches its deadline.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime.now(UTC)
        # Each sleeper: its deadline and the future `advance` resolves (on the sleeper's loop).
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward and wake every sleeper whose deadline is reached (from any thread)."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._now += timedelta(seconds=seconds)
        due = [s for s in self._sleepers if s[0] <= self._now]
        self._sleepers = [s for s in self._sleepers if s[0] > self._now]
        for _, future in due:
            future.get_loop().call_soon_threadsafe(_wake, future)

    async def sleep_until(self, deadline: datetime) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        sleeper = (deadline, asyncio.get_running_loop().create_future())
        self._sleepers.append(sleeper)
        try:
            await sleeper[1]
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    @property
    def sleepers(self) -> int:
        """How many `sleep_until` calls are waiting (a test waits for a loop to be asleep)."""
        return len(self._sleepers)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
