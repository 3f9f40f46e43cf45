"""The routing decision, after commit: which committed notifications may need a push, and when.

A notification of a user with push subscriptions, of a priority that is pushed at all, is put in
a durable `push` job (one per commit and delay): due at once when the user has no connection
here, else once the priority's delay for an acknowledgement has passed. When the job comes due it
pushes only what is still undelivered (an `ack` meanwhile, or a plain client that got the frame,
cancels it: `jobs`).

With several processes (`shared`), a user with no connection here may have one in another: the
job due at once is marked `IF_OFFLINE`, and when it runs it asks every process's presence, once
for the whole job, and gives the users found connected their priority's delay (`jobs`). The send
path never waits for Redis.

Deciding costs the send path a set lookup per notification: the users with subscriptions are
held in memory (loaded at start, kept current by registrations and removals). With several
processes, a registration taken by one is announced to all (`PUSH_SUBSCRIBED`, through the
broker), and after the broker may have lost events each process reads the users again
(`reload_soon`): otherwise a process started before the registration would never push for
what is sent through it. The jobs of a
commit are handed to the store's next batch of writes in one statement, never awaited: the
notifications are durable first, their jobs a commit later (a kill -9 in that instant loses the
pushes, never the notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.push.jobs import IF_OFFLINE
from diagnoxix.models import Notification
from diagnoxix.store.protocols import PushStore, StoreError
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_ROUTE
from diagnoxix.store.timer_records import NewTimer

log = logging.getLogger("diagnoxix.push")


# The broker's topic (`Broker.announce`): a user registered a push subscription.
PUSH_SUBSCRIBED = "push.subscribed"


class PushRouter:
    """The store's commit listener for push (`route`)."""

    def __init__(
        self,
        store: PushStore,
        clock: Clock,
        settings: Settings,
        connected: Callable[[str], int],
        *,
        shared: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        # This process's connections of a user; `shared`: other processes hold connections too.
        self._connected = connected
        self._shared = shared
        self._delays = {p: d for p, d in settings.push_delays if d is not None}
        self.subscribed: set[str] = set()
        # Called once jobs are written (the timers' scheduler looks again at what is due).
        self.on_added: Callable[[], None] = lambda: None
        self.routed = 0
        self._reload: asyncio.Task[None] | None = None

    def reload_soon(self) -> None:
        """Read the users with subscriptions again (registrations announced meanwhile may have
        been lost); without awaiting."""
        if self._reload is None or self._reload.done():
            self._reload = asyncio.create_task(self._reload_users(), name="diagnoxix-push-users")

    async def _reload_users(self) -> None:
        try:
            self.subscribed.update(await self._store.push_subscribed_users())
        except StoreError as exc:
            log.warning("push.reload_failed", extra={"error": type(exc).__name__})

    async def close(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload

    def route(self, notifications: Sequence[Notification]) -> None:
        """Commit listener: synchronous, awaits nothing."""
        subscribed, delays = self.subscribed, self._delays
        if not subscribed:
            return
        # One job per delay: a burst of a thousand notifications is a row or two, not a thousand.
        by_delay: dict[tuple[int, bool], list[str]] = {}
        for note in notifications:
            if note.user_id not in subscribed or note.priority not in delays:
                continue
            delay = delays[note.priority]
            # Connected here: after the delay. Else at once; with several processes, unless the
            # user is connected in another one (asked when the job runs).
            here = self._connected(note.user_id)
            key = (delay, False) if here else (0, self._shared and delay > 0)
            by_delay.setdefault(key, []).append(note.id)
        if not by_delay:
            return
        now = self._clock.now()
        jobs = [
            NewTimer(
                PUSH_ROUTE,
                PUSH_OWNER,
                now + timedelta(seconds=delay),
                {"notification_ids": ids, IF_OFFLINE: True} if if_offline else {"notification_ids": ids},
            )
            for (delay, if_offline), ids in by_delay.items()
        ]
        self._store.queue_push_jobs(jobs, self._written)

    def _written(self, count: int) -> None:
        self.routed += count
        self.on_added()
