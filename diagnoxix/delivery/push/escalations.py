"""Critical results on the push channel (docs/critical.md): an escalation step naming `push` sends
each person it tells their latest copy of the item, to every push subscription they have, at once
and through the same durable outbox as every push (one send job per subscription).

Unlike an ordinary push, which goes only while a notification is undelivered, an escalation's goes
even if the copy was shown on a page: it was not acknowledged, and that is why the step runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from diagnoxix.clock import Clock
from diagnoxix.delivery.critical import Escalation
from diagnoxix.store.critical_records import CriticalCopy, CriticalStore
from diagnoxix.store.protocols import PushStore, TimerStore
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_SEND
from diagnoxix.store.timer_records import NewTimer


class NoPushSubscription(Exception):
    """Nobody the step tells has a push subscription: the step could not go out on this channel."""


class _Store(CriticalStore, PushStore, TimerStore, Protocol):
    pass


class PushEscalations:
    def __init__(self, store: _Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        # Called once jobs are written (the timers' scheduler looks again at what is due).
        self.on_added: Callable[[], None] = lambda: None

    async def __call__(self, escalation: Escalation) -> None:
        """The step's pushes, durable once this returns; raises when nobody can get one."""
        latest: dict[str, CriticalCopy] = {}
        for copy in await self._store.critical_copies(escalation.item_id):
            newer = copy.user_id not in latest or copy.step > latest[copy.user_id].step
            if copy.user_id in escalation.user_ids and newer:
                latest[copy.user_id] = copy
        subscriptions = await self._store.push_subscriptions_of(sorted(latest)) if latest else {}
        now = self._clock.now()
        sends = [
            NewTimer(
                kind=PUSH_SEND,
                owner=PUSH_OWNER,
                due_at=now,
                payload={
                    "notification_id": copy.notification_id,
                    "subscription_id": sub.id,
                    "escalation": True,
                },
            )
            for user_id, copy in sorted(latest.items())
            for sub in subscriptions.get(user_id, ())
        ]
        if not sends:
            raise NoPushSubscription("nobody this step tells has a push subscription")
        await self._store.add_timers(sends)
        self.on_added()
