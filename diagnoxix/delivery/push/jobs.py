"""The push outbox's jobs, run by the durable timers (`delivery.timers`).

`push` (one per commit and delay, naming its notifications): when it comes due, a notification
that is gone (retracted, expired) or delivered (acknowledged by a v1 client, or written to a plain
one) is not pushed; each other one becomes one `push_send` job per subscription of its user, in
the transaction that finishes the `push` job. A job marked `IF_OFFLINE` (several processes: its
users had no connection in the process that routed it) first asks presence, once for all its
users, who is connected in any process: their notifications go into a new `push` job due after
their priority's delay, in the same transaction, as if they had been connected there. Presence
answers within Redis's reply timeout, and without Redis (or on any failure) says nobody: the
push goes out at once, the safe side for a patient.

`push_send` (one per notification and subscription): posts the push and records the answer in
the transaction that finishes the job, so a push the service accepted (201) is never sent again,
across restarts and kill -9 alike; only a kill between the service's answer and that commit sends
it once more, and the `Topic` makes the service replace the first copy if it has not delivered it.
404 and 410 remove the subscription; 429, 5xx and no answer try again later, after `Retry-After`
when the service says, else with a growing delay; other answers are failures, recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Protocol

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.digests import PUSH_DIGEST, Digests
from diagnoxix.delivery.preferences import ChannelPreferences
from diagnoxix.delivery.push.payload import URGENCY, push_payload, push_topic, push_ttl
from diagnoxix.delivery.push.sender import UNUSABLE_KEY, PushAnswer, PushSender
from diagnoxix.models import Notification
from diagnoxix.store.critical_records import CriticalStore
from diagnoxix.store.protocols import (
    IdempotencyConflict,
    NotificationStore,
    PreferenceStore,
    PushStore,
    StoreError,
    TimerStore,
)
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_ROUTE, PUSH_SEND, PushAttempt, PushSubscription
from diagnoxix.store.timer_records import NewTimer, Timer

# The channel's name in users' preferences (`rules.preferences.CHANNELS`).
PUSH = "push"
# A `push` job's payload flag: push only to users connected in no process (see the module's doc).
IF_OFFLINE = "if_offline"
# Which of these users have a connection in any process (`delivery.presence.Presence.online`).
Online = Callable[[Iterable[str]], Awaitable[set[str]]]

log = logging.getLogger("diagnoxix.push")

# Attempts of one push before it is given up (the delays add up to about 40 minutes).
MAX_PUSH_ATTEMPTS = 12
RETRY_CAP_SECONDS = 600
# Pushes waiting on push services at once; a job's lease outlasts the push timeout by this much.
MAX_IN_FLIGHT = 100
LEASE_MARGIN_SECONDS = 20
GONE = (404, 410, UNUSABLE_KEY)
SENT = (200, 201, 202)


def retry_delay(answer: PushAnswer, attempts: int) -> float:
    """After `Retry-After` when the service says, else 1, 2, 4, … seconds up to a cap."""
    if answer.retry_after is not None:
        return max(answer.retry_after, 1.0)
    return float(min(2**attempts, RETRY_CAP_SECONDS))


class PushJobStore(NotificationStore, PushStore, PreferenceStore, TimerStore, CriticalStore, Protocol):
    """What the jobs use of the store."""


class PushRouteJobs:
    """The handler of `push` jobs."""

    def __init__(
        self,
        store: PushJobStore,
        clock: Clock,
        unsubscribed: set[str],
        chosen: ChannelPreferences,
        digests: Digests | None = None,
        *,
        online: Online | None = None,
        delays: dict[str, int] | None = None,
    ) -> None:
        self._store = store
        # For `IF_OFFLINE` jobs: who is connected in any process, and the priorities' delays.
        self._online = online
        self._delays = delays or {}
        # A digested type joins the user's digest rather than being pushed on its own.
        self._digests = digests or Digests((), ())
        self._clock = clock
        # The router's users with subscriptions: one found with none is dropped from it.
        self._subscribed = unsubscribed
        # Each user's channel preferences and quiet hours, asked when the push would go.
        self._chosen = chosen

    async def __call__(self, job: Timer) -> None:
        notes = await self._store.get_notifications([str(i) for i in job.payload["notification_ids"]])
        undelivered = [note for note in notes if note.delivered_at is None]
        wanted = await self._chosen.allowed(undelivered, PUSH)
        waiting = [note for note, ok in zip(undelivered, wanted, strict=True) if ok]
        deferred: list[NewTimer] = []
        if job.payload.get(IF_OFFLINE) and waiting and self._online is not None:
            waiting, deferred = await self._unless_online(waiting, self._online)
        users = {note.user_id for note in waiting}
        subscriptions = await self._store.push_subscriptions_of(sorted(users)) if users else {}
        self._subscribed.difference_update(users - set(subscriptions))
        now = self._clock.now()
        sends = [
            NewTimer(
                kind=PUSH_SEND,
                owner=PUSH_OWNER,
                due_at=now,
                payload={"notification_id": note.id, "subscription_id": sub.id},
            )
            for note in waiting
            for sub in subscriptions.get(note.user_id, ())
            if not self._digests.digested(note)
        ]
        joins = [
            self._digests.join(PUSH_DIGEST, note, now)
            for note in waiting
            if note.user_id in subscriptions and self._digests.digested(note)
        ]
        await self._store.route_push(job.id, [*deferred, *sends], joins)

    async def _unless_online(
        self, notes: list[Notification], online: Online
    ) -> tuple[list[Notification], list[NewTimer]]:
        """`notes` split: those to push now, and `push` jobs that wait their priority's delay for
        the others, whose users are connected in some process."""
        try:
            connected = await online({note.user_id for note in notes})
        except Exception:  # a surprise: push (the safe side), and say so
            log.exception("push.presence_failed")
            return notes, []
        now = self._clock.now()
        now_notes: list[Notification] = []
        later: dict[int, list[str]] = {}
        for note in notes:
            delay = self._delays.get(note.priority, 0) if note.user_id in connected else 0
            if delay > 0:
                later.setdefault(delay, []).append(note.id)
            else:
                now_notes.append(note)
        jobs = [
            NewTimer(PUSH_ROUTE, PUSH_OWNER, now + timedelta(seconds=delay), {"notification_ids": ids})
            for delay, ids in later.items()
        ]
        return now_notes, jobs


class PushSendJobs:
    """The handler of `push_send` jobs.

    A push waits on a push service (up to `DIAGNOXIX_PUSH_TIMEOUT`), and the timers run their due
    jobs a slice at a time: so the handler only leases the job (its due time moves past the
    longest a push may take) and sends in a task of its own, at most `MAX_IN_FLIGHT` at once. A
    push cut short by a crash or a shutdown is sent when its lease ends: its answer was never
    recorded, so it counts as never sent.

    The lease covers the wait for a slot too: a push queued behind `n` others starts within
    `n // MAX_IN_FLIGHT` push timeouts, each slot being freed within one. A lease of a single
    timeout would end, under a backlog, before the push even starts, and another process would
    take the job and push it a second time.
    """

    def __init__(self, store: PushJobStore, clock: Clock, sender: PushSender, settings: Settings) -> None:
        self._store = store
        self._clock = clock
        self._sender = sender
        self._titled = settings.push_titled_types
        self._ttl = settings.push_ttl_seconds
        self._timeout = timedelta(seconds=settings.push_timeout_seconds)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        # Jobs being leased, not yet in flight.
        self._leasing: set[str] = set()
        # Called when a push is to be tried again (the timers look again at what is due next).
        self.on_rescheduled: Callable[[], None] = lambda: None
        # Answers by status, for tests and logs.
        self.answers: dict[int, int] = {}

    async def __call__(self, job: Timer) -> None:
        if job.id in self._in_flight or job.id in self._leasing:
            return
        # Counted before the first await: the timers may hand over a slice of jobs at once.
        ahead = len(self._in_flight) + len(self._leasing)
        self._leasing.add(job.id)
        try:
            await self._store.lease_push(job.id, self._clock.now() + self.lease(ahead))
        finally:
            self._leasing.discard(job.id)
        task = asyncio.get_running_loop().create_task(self._run(job), name="diagnoxix-push-send")
        self._in_flight[job.id] = task
        task.add_done_callback(lambda _: self._in_flight.pop(job.id, None))

    def lease(self, ahead: int) -> timedelta:
        """How long a push with `ahead` pushes in flight or queued before it may take."""
        return self._timeout * (ahead // MAX_IN_FLIGHT + 1) + timedelta(seconds=LEASE_MARGIN_SECONDS)

    async def _run(self, job: Timer) -> None:
        try:
            async with self._slots:
                await self._send(job)
        except IdempotencyConflict:
            log.info("push.already_finished", extra={"timer": job.id})
        except StoreError as exc:
            # The answer could not be recorded: the push goes again when its lease ends.
            log.warning("push.not_recorded", extra={"timer": job.id, "error": type(exc).__name__})

    async def close(self) -> None:
        """Stop the pushes in flight (each goes again when its lease ends, after a restart)."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, job: Timer) -> None:
        nid = str(job.payload["notification_id"])
        sub = await self._store.get_push_subscription(str(job.payload["subscription_id"]))
        notes = await self._store.get_notifications([nid])
        # An escalation step pushes a critical copy nobody acknowledged, shown on a page or not.
        delivered = notes[0].delivered_at is not None if notes else False
        if sub is None or not notes or (delivered and not job.payload.get("escalation")):
            # Unsubscribed, retracted, expired or delivered meanwhile: nothing to push.
            await self._store.finish_push(job.id, None)
            return
        note = notes[0]
        topic = push_topic(note)
        await self._deliver(
            job,
            nid,
            sub,
            push_payload(note, self._titled),
            ttl=push_ttl(note, self._clock.now().timestamp(), self._ttl),
            urgency=URGENCY.get(note.priority, "normal"),
            topic=topic,
            recorded_topic=topic,
        )

    async def _deliver(
        self,
        job: Timer,
        nid: str,
        sub: PushSubscription,
        plaintext: bytes,
        *,
        ttl: int,
        urgency: str,
        topic: str,
        recorded_topic: str | None,
    ) -> None:
        """Post one push and record the answer against `nid` (with `recorded_topic`: what a
        retraction of `nid` is pushed with), finishing, retrying or giving up the job."""
        answer = await self._sender.send(
            sub, plaintext, ttl=ttl, urgency=urgency, topic=topic, now=self._clock.now()
        )
        self.answers[answer.status] = self.answers.get(answer.status, 0) + 1
        status = answer.status
        extra = {"timer": job.id, "notification_id": nid, "host": sub.host, "status": status}
        if status in SENT:
            await self._store.finish_push(
                job.id, PushAttempt(nid, sub.id, sub.host, status, "sent", topic=recorded_topic)
            )
            log.info("push.sent", extra=extra)
        elif status in GONE:
            # The browser unsubscribed, or the subscription expired: never push to it again.
            attempt = PushAttempt(nid, sub.id, sub.host, status, "gone")
            await self._store.finish_push(job.id, attempt, remove_subscription=True)
            log.info("push.subscription_gone", extra=extra)
        elif status == 429 or status >= 500 or status == 0:
            attempts = job.attempts + 1
            if attempts >= MAX_PUSH_ATTEMPTS:
                await self._store.retry_push(
                    job.id, PushAttempt(nid, sub.id, sub.host, status, "failed"), None
                )
                log.error("push.given_up", extra=extra | {"attempts": attempts})
                return
            due = self._clock.now() + timedelta(seconds=retry_delay(answer, job.attempts))
            await self._store.retry_push(job.id, PushAttempt(nid, sub.id, sub.host, status, "retry"), due)
            self.on_rescheduled()
            log.warning("push.retry", extra=extra | {"attempts": attempts})
        else:
            # 400, 403 (a key mismatch), 413 …: trying again would get the same answer.
            await self._store.finish_push(job.id, PushAttempt(nid, sub.id, sub.host, status, "failed"))
            log.error("push.refused", extra=extra)
