"""The push outbox's jobs, run by the durable timers (`delivery.timers`).

`push` (one per commit and delay, naming its notifications): when it comes due, a notification
that is gone (retracted, expired) or delivered (acknowledged by a v1 client, or written to a plain
one) is not pushed; each other one becomes one `push_send` job per subscription of its user, in
the transaction that finishes the `push` job.

`push_send` (one per notification and subscription): posts the push and records the answer in
the transaction that finishes the job, so a push the service accepted (201) is never sent again,
across restarts and kill -9 alike; only a kill between the service's answer and that commit sends
it once more, and the `Topic` makes the service replace the first copy if it has not delivered it.
404 and 410 remove the subscription; 429, 5xx and no answer try again later, after `Retry-After`
when the service says, else with a growing delay; other answers are failures, recorded.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Protocol

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.push.payload import URGENCY, push_payload, push_topic, push_ttl
from diagnoxix.delivery.push.sender import UNUSABLE_KEY, PushAnswer, PushSender
from diagnoxix.store.protocols import NotificationStore, PushStore
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_SEND, PushAttempt
from diagnoxix.store.timer_records import NewTimer, Timer

log = logging.getLogger("diagnoxix.push")

# Attempts of one push before it is given up (the delays add up to about 40 minutes).
MAX_PUSH_ATTEMPTS = 12
RETRY_CAP_SECONDS = 600
GONE = (404, 410, UNUSABLE_KEY)
SENT = (200, 201, 202)


def retry_delay(answer: PushAnswer, attempts: int) -> float:
    """After `Retry-After` when the service says, else 1, 2, 4, … seconds up to a cap."""
    if answer.retry_after is not None:
        return max(answer.retry_after, 1.0)
    return float(min(2**attempts, RETRY_CAP_SECONDS))


class PushJobStore(NotificationStore, PushStore, Protocol):
    """What the jobs use of the store."""


class PushRouteJobs:
    """The handler of `push` jobs."""

    def __init__(self, store: PushJobStore, clock: Clock, unsubscribed: set[str]) -> None:
        self._store = store
        self._clock = clock
        # The router's users with subscriptions: one found with none is dropped from it.
        self._subscribed = unsubscribed

    async def __call__(self, job: Timer) -> None:
        notes = await self._store.get_notifications([str(i) for i in job.payload["notification_ids"]])
        waiting = [note for note in notes if note.delivered_at is None]
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
        ]
        await self._store.route_push(job.id, sends)


class PushSendJobs:
    """The handler of `push_send` jobs."""

    def __init__(self, store: PushJobStore, clock: Clock, sender: PushSender, settings: Settings) -> None:
        self._store = store
        self._clock = clock
        self._sender = sender
        self._titled = settings.push_titled_types
        self._ttl = settings.push_ttl_seconds
        # Answers by status class, for `/metrics`-style counting in tests and logs.
        self.answers: dict[int, int] = {}

    async def __call__(self, job: Timer) -> None:
        nid = str(job.payload["notification_id"])
        sub = await self._store.get_push_subscription(str(job.payload["subscription_id"]))
        notes = await self._store.get_notifications([nid])
        if sub is None or not notes or notes[0].delivered_at is not None:
            # Unsubscribed, retracted, expired or delivered meanwhile: nothing to push.
            await self._store.finish_push(job.id, None)
            return
        note = notes[0]
        now = self._clock.now()
        answer = await self._sender.send(
            sub,
            push_payload(note, self._titled),
            ttl=push_ttl(note, now.timestamp(), self._ttl),
            urgency=URGENCY.get(note.priority, "normal"),
            topic=push_topic(note),
            now=now,
        )
        self.answers[answer.status] = self.answers.get(answer.status, 0) + 1
        status = answer.status
        extra = {"timer": job.id, "notification_id": nid, "host": sub.host, "status": status}
        if status in SENT:
            await self._store.finish_push(job.id, PushAttempt(nid, sub.id, sub.host, status, "sent"))
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
            log.warning("push.retry", extra=extra | {"attempts": attempts})
        else:
            # 400, 403 (a key mismatch), 413 …: trying again would get the same answer.
            await self._store.finish_push(job.id, PushAttempt(nid, sub.id, sub.host, status, "failed"))
            log.error("push.refused", extra=extra)
