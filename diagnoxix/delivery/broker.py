"""The broker carries everything a user's sockets must see to every process's hub.

Committed notifications, and control events that are not notifications: a new unread count, a
disconnect, a revocation of devices (every process updates its revoked list and closes their
sockets). And announcements: what every process keeps in memory and must learn of at once (the
users with push subscriptions). Nothing pushes straight into the local hub; with one process
the broker is in-process, and with several processes behind a load balancer, where a user's
sockets may be open in any of them, it is Redis pub/sub (`redis_broker.RedisBroker`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from diagnoxix.models import Notification


@dataclass(frozen=True, slots=True)
class Revocation:
    """Devices revoked: what every process must refuse from now on, and whose sockets to close."""

    user_id: str
    # (token id, Unix time the token expires): an entry is dropped once it cannot matter.
    tokens: tuple[tuple[str, float], ...]
    # Every device of the user: close all their sockets, those of tokens without a record too.
    all_devices: bool


# Hears a user id announced on a topic (`Broker.announce`).
AnnouncementListener = Callable[[str], None]


class BrokerSubscriber(Protocol):
    """What a process's hub takes from the broker. Each call returns without awaiting a client."""

    def publish(self, notifications: Sequence[Notification]) -> None:
        """Committed notifications, in seq order."""

    def wants(self, user_id: str) -> bool:
        """Whether a notification for this recipient (a user, or '*' for everyone) would go
        anywhere here. A broker that must rebuild each notification it hears from another
        process may leave out the others, and tell `passed` instead."""

    def passed(self, seq: int, count: int) -> None:
        """`count` committed notifications, the last one `seq`, were left out because nobody here
        wants them (`wants`), in their place in seq order: nothing to fan out, but the
        watermark moves past them."""

    def send_control(self, user_id: str, text: str, seq: int | None = None) -> None:
        """A control frame for every v1 connection of the user (of everyone for '*'). With a seq
        (a correction's), it is an event of the user's stream, fanned out in seq order."""

    def disconnect(self, user_id: str, code: int, reason: str) -> None:
        """Close every connection of the user."""

    def revoke(self, revocation: Revocation) -> None:
        """Refuse the revoked tokens from now on and close the connections they opened."""


class Broker(Protocol):
    def subscribe(self, subscriber: BrokerSubscriber) -> None: ...

    def publish(self, notifications: Sequence[Notification]) -> None:
        """Hand committed notifications to every subscriber, in seq order, without awaiting."""

    def send_control(self, user_id: str, text: str, seq: int | None = None) -> None:
        """A control frame (`delivery.frames`) for the user's v1 connections, in every process;
        a correction's comes with its seq, right after it committed."""

    def disconnect(self, user_id: str, code: int, reason: str) -> None:
        """Close the user's connections in every process."""

    def revoke(self, revocation: Revocation) -> None:
        """Revoked devices: every process refuses their tokens and closes their sockets."""

    def announce(self, topic: str, user_id: str) -> None:
        """Something every process keeps in memory changed for a user (e.g. `push.subscribed`):
        every process's listeners of the topic (`on_announcement`) hear the user id, this
        process's too (in-process: before this returns)."""

    def on_announcement(self, topic: str, listener: AnnouncementListener) -> None: ...

    async def drain(self) -> None:
        """Return once everything handed over before this call is on its way to every process
        (or dropped because the way is down). A store shared by several processes awaits it
        between a commit and releasing its seq lock, so live events reach every process in
        commit order. Nothing to wait for in-process."""

    @property
    def state(self) -> str:
        """`in-process`, or whether the way to the other processes is `up` or `down` (`/readyz`)."""
        ...


class InProcessBroker:
    """Delivers synchronously to the subscribers of this one process."""

    def __init__(self) -> None:
        self._subscribers: list[BrokerSubscriber] = []
        self._announcements: dict[str, list[AnnouncementListener]] = {}

    def subscribe(self, subscriber: BrokerSubscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, notifications: Sequence[Notification]) -> None:
        for subscriber in self._subscribers:
            subscriber.publish(notifications)

    def send_control(self, user_id: str, text: str, seq: int | None = None) -> None:
        for subscriber in self._subscribers:
            subscriber.send_control(user_id, text, seq)

    def disconnect(self, user_id: str, code: int, reason: str) -> None:
        for subscriber in self._subscribers:
            subscriber.disconnect(user_id, code, reason)

    def revoke(self, revocation: Revocation) -> None:
        for subscriber in self._subscribers:
            subscriber.revoke(revocation)

    def announce(self, topic: str, user_id: str) -> None:
        for listener in self._announcements.get(topic, ()):
            listener(user_id)

    def on_announcement(self, topic: str, listener: AnnouncementListener) -> None:
        self._announcements.setdefault(topic, []).append(listener)

    async def drain(self) -> None:
        return

    @property
    def state(self) -> str:
        return "in-process"
