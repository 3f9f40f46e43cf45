"""The routing decision, after commit: which committed notifications may need a push, and when.

A notification of a user with push subscriptions, of a priority that is pushed at all, gets one
durable `push` job: due at once when the user has no connection here, else once the priority's
delay for an acknowledgement has passed. When the job comes due it pushes only what is still
undelivered (an `ack` meanwhile, or a plain client that got the frame, cancels it: `jobs`).

Deciding costs the send path a set lookup per notification: the users with subscriptions are
held in memory (loaded at start, kept current by registrations and removals), and the jobs of a
burst are written in one batch by a task of their own, never awaited by the commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.models import Notification
from diagnoxix.store.protocols import StoreError, TimerStore
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_ROUTE
from diagnoxix.store.timer_records import NewTimer

log = logging.getLogger("diagnoxix.push")

# Jobs written per store call at most.
BATCH = 1000


class PushRouter:
    """The store's commit listener for push (`route`), and the batch writer of its jobs."""

    def __init__(
        self,
        store: TimerStore,
        clock: Clock,
        settings: Settings,
        connected: Callable[[str], int],
        on_added: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._connected = connected
        self.on_added = on_added
        self._delays = {p: d for p, d in settings.push_delays if d is not None}
        self.subscribed: set[str] = set()
        self._pending: list[NewTimer] = []
        self._writer: asyncio.Task[None] | None = None
        self.routed = 0

    def route(self, notifications: Sequence[Notification]) -> None:
        """Commit listener: synchronous, awaits nothing."""
        subscribed, delays = self.subscribed, self._delays
        if not subscribed:
            return
        now = None
        for note in notifications:
            if note.user_id not in subscribed or note.priority not in delays:
                continue
            now = now or self._clock.now()
            delay = delays[note.priority] if self._connected(note.user_id) else 0
            self._pending.append(
                NewTimer(
                    kind=PUSH_ROUTE,
                    owner=PUSH_OWNER,
                    due_at=now + timedelta(seconds=delay),
                    payload={"notification_id": note.id, "user_id": note.user_id},
                )
            )
        if self._pending and self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="diagnoxix-push-outbox")

    async def _write(self) -> None:
        """Write what is pending, a batch at a time, until nothing is (one store call per burst)."""
        try:
            while self._pending:
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                try:
                    await self._store.add_timers(batch)
                except StoreError as exc:
                    # The notifications are stored and shown in the app; only their push is lost.
                    log.error(
                        "push.outbox_write_failed", extra={"count": len(batch), "error": type(exc).__name__}
                    )
                    continue
                self.routed += len(batch)
                self.on_added()
        finally:
            self._writer = None

    async def flush(self) -> None:
        """Wait until the jobs routed so far are written (tests, shutdown)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)
