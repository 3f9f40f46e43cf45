"""The time the service reads: the system's, or one a test (or a simulation) moves by hand.

Whatever is decided by time (expiry and retention now; scheduled sends and escalation steps later)
reads it from a `Clock` handed in at assembly, so a test of a one-hour expiry or a five-minute
escalation step moves the clock instead of waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Stands still until moved: `advance(seconds)`. Starts at the real time unless told."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._now += timedelta(seconds=seconds)
