"""The broker for several processes: one Redis pub/sub channel that every process hears.

Everything a hub must hear (committed notifications in seq order, control frames with their
seq, disconnects, revocations) is one message on one channel, `<prefix>:events`, so every
process receives the same events in the same order. This process's own hub hears them from the
channel too, never directly: there is one order, the channel's, everywhere.

What a process hears costs it little beyond what its own clients need: a notification whose
recipient has no connection here is passed over by its seq, without reading its frame, and one
this process published itself comes back as the very object it sent, not rebuilt from the frame.

Calls never await: they queue a PUBLISH on the link (`redis_link.RedisLink`), which pipelines
them in order; `drain()` awaits what was queued. When Redis is down or restarts, live fan-out
stops for the moment: what is published meanwhile is dropped (it is in the store), the listener
resubscribes with a capped backoff, and once it hears the channel again, or hears another
process say it lost events (`redis_events.RESYNC`), it asks for a resync (`on_resync`): the
process's clients then resume from the store, which has everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from diagnoxix.delivery import redis_events
from diagnoxix.delivery.broker import AnnouncementListener, BrokerSubscriber, Revocation
from diagnoxix.delivery.redis_link import BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS, Command, RedisLink
from diagnoxix.models import Notification
from diagnoxix.redis_client import REPLY_TIMEOUT_SECONDS

log = logging.getLogger("diagnoxix.broker")

# Notifications this process published and has not yet heard back, by seq, kept to hand its hub
# the objects themselves; past this many (Redis dropped what was sent) they are forgotten.
OWN_KEPT_MAX = 50_000


class RedisBroker:
    def __init__(self, link: RedisLink, prefix: str) -> None:
        self._link = link
        self.channel = f"{prefix}:events"
        self._subscribers: list[BrokerSubscriber] = []
        self._resync_listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        # The first attempt to subscribe is over, one way or the other.
        self._first_attempt = asyncio.Event()
        # `start` stopped waiting for a first subscription: when it comes, events may be missing.
        self._gave_up_waiting = False
        self._unreadable = 0
        self._own: dict[int, Notification] = {}
        self._announcements: dict[str, list[AnnouncementListener]] = {}
        link.add_source(self._lost)
        link.merge_publishes(self.channel, redis_events.merge)

    # -- the Broker protocol -------------------------------------------------------------

    def subscribe(self, subscriber: BrokerSubscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, notifications: Sequence[Notification]) -> None:
        if notifications:
            own = self._own
            if len(own) + len(notifications) > OWN_KEPT_MAX:
                own.clear()
            for note in notifications:
                own[note.seq] = note
            self._link.send("PUBLISH", self.channel, redis_events.notifications(notifications))

    def send_control(self, user_id: str, text: str, seq: int | None = None) -> None:
        self._link.send("PUBLISH", self.channel, redis_events.control(user_id, text, seq))

    def disconnect(self, user_id: str, code: int, reason: str) -> None:
        self._link.send("PUBLISH", self.channel, redis_events.disconnect(user_id, code, reason))

    def revoke(self, revocation: Revocation) -> None:
        self._link.send("PUBLISH", self.channel, redis_events.revocation(revocation))

    def announce(self, topic: str, user_id: str) -> None:
        self._link.send("PUBLISH", self.channel, redis_events.announcement(topic, user_id))

    def on_announcement(self, topic: str, listener: AnnouncementListener) -> None:
        self._announcements.setdefault(topic, []).append(listener)

    async def drain(self) -> None:
        await self._link.drain()

    @property
    def state(self) -> str:
        return "up" if self._link.up else "down"

    # -- lifecycle -----------------------------------------------------------------------

    def on_resync(self, listener: Callable[[], None]) -> None:
        """`listener` runs when this process may have missed events (it must not block)."""
        self._resync_listeners.append(listener)

    async def start(self, wait: float) -> bool:
        """Start listening, and wait (up to `wait` seconds) for the first attempt to subscribe.
        False if it failed: the process serves anyway, and resyncs once it hears the channel."""
        self._task = asyncio.create_task(self._listen_forever(), name="diagnoxix-broker-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), wait)
        if not self._subscribed.is_set():
            self._gave_up_waiting = True
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the listener --------------------------------------------------------------------

    def _lost(self, lost: bool) -> list[Command]:
        """When the link lost commands (events among them), every process must resync."""
        return [("PUBLISH", self.channel, redis_events.RESYNC)] if lost else []

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        failed = False
        while True:
            pubsub = self._link.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                # Events published from now on reach us once Redis confirms the subscription.
                if await pubsub.get_message(timeout=REPLY_TIMEOUT_SECONDS) is None:
                    raise RedisTimeoutError("no confirmation of the subscription")
                self._link.listening(True)
                backoff = BACKOFF_FIRST_SECONDS
                if failed or self._gave_up_waiting:
                    self._resync()
                failed = False
                self._subscribed.set()
                self._first_attempt.set()
                while True:
                    # Blocks until a message comes (cancelled at close); a dead connection
                    # raises, a silent one is found by TCP keepalive.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                failed = True
                self._link.listening(False, exc)
            except Exception as exc:  # a driver's surprise must not end live fan-out for good
                log.exception("broker.listener_failed")
                failed = True
                self._link.listening(False, exc)
            finally:
                self._first_attempt.set()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _dispatch(self, raw: bytes) -> None:
        try:
            events = redis_events.decode(raw)
        except redis_events.BadMessage as exc:
            self._unreadable_message(exc)
            return
        for event in events:
            if event is None:
                self._resync()
                continue
            if isinstance(event, redis_events.Relayed):
                self._relay(event)
                continue
            if isinstance(event, redis_events.Announced):
                self._announced(event)
                continue
            for subscriber in self._subscribers:
                try:
                    event(subscriber)
                except Exception:  # one subscriber's failure must not stop the listener
                    log.exception("broker.subscriber_failed")

    def _relay(self, relayed: redis_events.Relayed) -> None:
        """Hand each subscriber the notifications it wants, rebuilt once whoever wants them, and
        the seqs of the others (`BrokerSubscriber.passed`)."""
        own = self._own
        rebuilt: dict[int, Notification] = {}
        for subscriber in self._subscribers:
            notes: list[Notification] = []
            skipped, last = 0, 0
            try:
                for position, entry in enumerate(relayed.entries):
                    frame, _, user, seq = entry
                    if user is not None and seq is not None and not subscriber.wants(user):
                        skipped, last = skipped + 1, seq
                        continue
                    note = rebuilt.get(position)
                    if note is None:
                        note = own.get(seq) if seq is not None else None
                        if note is None or note.frame != frame:
                            note = relayed.rebuild(entry)
                        rebuilt[position] = note
                    notes.append(note)
                if notes:
                    subscriber.publish(notes)
                if skipped:
                    subscriber.passed(last, skipped)
            except redis_events.BadMessage as exc:
                self._unreadable_message(exc)
                return
            except Exception:  # one subscriber's failure must not stop the listener
                log.exception("broker.subscriber_failed")
        for _, _, _, seq in relayed.entries:
            if seq is not None:
                own.pop(seq, None)

    def _announced(self, event: redis_events.Announced) -> None:
        for listener in self._announcements.get(event.topic, ()):
            try:
                listener(event.user_id)
            except Exception:  # one listener's failure must not stop the listener
                log.exception("broker.announcement_listener_failed")

    def _unreadable_message(self, exc: redis_events.BadMessage) -> None:
        """Someone else's message on our channel (choose another DIAGNOXIX_BROKER_PREFIX), or a
        newer version's: logged the first time, then counted. Never its content."""
        self._unreadable += 1
        if self._unreadable == 1:
            log.warning("broker.unreadable_message", extra={"channel": self.channel, "error": str(exc)})

    def _resync(self) -> None:
        for listener in self._resync_listeners:
            listener()
