"""The broker carries committed notifications to every process's hub.

In-process now: committed notifications go straight to this process's hub. Redis pub/sub is the
planned second implementation, for several processes behind a load balancer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from diagnoxix.models import Notification

Subscriber = Callable[[Sequence[Notification]], None]


class Broker(Protocol):
    def publish(self, notifications: Sequence[Notification]) -> None:
        """Hand committed notifications to every subscriber, in seq order, without awaiting."""

    def subscribe(self, subscriber: Subscriber) -> None: ...


class InProcessBroker:
    """Delivers synchronously to the subscribers of this one process."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, notifications: Sequence[Notification]) -> None:
        for subscriber in self._subscribers:
            subscriber(notifications)
