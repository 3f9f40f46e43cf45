"""Live figures for the overview, sampled once a second off the delivery path.

Nothing here hooks into publishing or committing: the sampler reads the store's and the hub's
running totals once a second and keeps an hour of samples, so "sent in the last minute" is a
subtraction. Figures cover the time since the server started (at most the last hour).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from typing import Any

from diagnoxix.delivery.hub import Hub
from diagnoxix.delivery.presence import Presence
from diagnoxix.models import utc_now
from diagnoxix.store.protocols import Store, StoreError

log = logging.getLogger("diagnoxix.dashboard")

SAMPLE_INTERVAL_SECONDS = 1.0
# One hour of one-second samples, plus the one the hour is measured from.
HISTORY_SAMPLES = 3601
# The chart shows the last minute, one point a second.
CHART_POINTS = 60
# Read counts need a query; refreshing them every few seconds is plenty for a dashboard.
READ_REFRESH_TICKS = 5


@dataclass(frozen=True, slots=True)
class _Sample:
    """The store's totals at `at`, and what was sent and delivered since the first sample: only
    increases count, so a purge or a retraction (the totals fall) is not negative activity."""

    at: float
    stored: int
    delivered: int
    sent_since: int = 0
    delivered_since: int = 0


def process_memory_bytes() -> int:
    """Resident memory now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StatsSampler:
    def __init__(self, store: Store, hub: Hub, started_at: float) -> None:
        self._store = store
        self._hub = hub
        self._started_at = started_at
        self._samples: deque[_Sample] = deque(maxlen=HISTORY_SAMPLES)
        self._read_minute = 0
        self._read_hour = 0
        self._ticks = 0

    async def sample(self) -> None:
        """Take one sample (the dashboard's context takes the first before any page is served)."""
        try:
            counts = await self._store.counts()
        except StoreError:
            return  # shutting down: keep the last figures
        # The first sample counts from itself: nothing sent or delivered before it.
        last = self._samples[-1] if self._samples else _Sample(0.0, counts.stored, counts.delivered)
        self._samples.append(
            _Sample(
                time.monotonic(),
                counts.stored,
                counts.delivered,
                last.sent_since + max(0, counts.stored - last.stored),
                last.delivered_since + max(0, counts.delivered - last.delivered),
            )
        )

    async def refresh_reads(self) -> None:
        now = utc_now()
        try:
            self._read_minute = await self._store.count_read_since(now - timedelta(minutes=1))
            self._read_hour = await self._store.count_read_since(now - timedelta(hours=1))
        except StoreError:
            pass  # shutting down: keep the last figures

    async def run(self) -> None:
        """Sample forever (cancelled by the dashboard's cleanup context)."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
            await self.sample()
            if self._ticks % READ_REFRESH_TICKS == 0:
                await self.refresh_reads()
            self._ticks += 1

    def _since(self, seconds: float) -> tuple[int, int]:
        latest = self._samples[-1]
        base = latest
        for sample in reversed(self._samples):
            if latest.at - sample.at > seconds + 0.5:
                break
            base = sample
        return latest.sent_since - base.sent_since, latest.delivered_since - base.delivered_since

    def series(self) -> dict[str, list[int]]:
        """Per-second sent and delivered counts for the chart, oldest first."""
        recent = list(self._samples)[-(CHART_POINTS + 1) :]
        sent = [b.sent_since - a.sent_since for a, b in pairwise(recent)]
        delivered = [b.delivered_since - a.delivered_since for a, b in pairwise(recent)]
        return {"sent": sent, "delivered": delivered}

    def figures(self) -> dict[str, Any]:
        """The overview's figures by their `data-stat` names, but connections and users online
        (`overview_figures` counts them in every process)."""
        hub = self._hub
        sent_minute, delivered_minute = self._since(60)
        sent_hour, delivered_hour = self._since(3600)
        return {
            "sent_minute": sent_minute,
            "sent_hour": sent_hour,
            "delivered_minute": delivered_minute,
            "delivered_hour": delivered_hour,
            "read_minute": self._read_minute,
            "read_hour": self._read_hour,
            "send_queue": hub.queued_frames,
            "memory": process_memory_bytes(),
            "uptime": round(time.time() - self._started_at),
        }


async def overview_figures(sampler: StatsSampler, presence: Presence) -> dict[str, Any]:
    """The overview's figures, with connections and users online counted in every process (the
    rest are this process's)."""
    connections, users = await presence.totals()
    return {"connections": connections, "users_online": users} | sampler.figures()
