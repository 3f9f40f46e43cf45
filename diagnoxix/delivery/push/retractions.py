"""A retraction replaces its push (docs/channels.md): when a notification that was pushed (a push
service answered "sent") is retracted, each subscription it reached gets a push with the same
`Topic` carrying `{"retracted": "<id>"}`. A push service still holding the first push replaces it
(RFC 8030); a browser that showed it closes it (the service worker closes the notification with
that tag and shows nothing new).

The store's correction listener (`corrected`) only queues a durable `push_retract` job with the
store's next batch of writes (never awaited: it runs in the commit). When due, the job reads the
pushes' answers and, in the transaction that finishes it, adds one `push_retract_send` job per
subscription; each goes through the same outbox as every push (retries, leases, answers).
"""

from __future__ import annotations

from collections.abc import Callable

from diagnoxix.clock import Clock
from diagnoxix.delivery.push.jobs import PushJobStore, PushSendJobs
from diagnoxix.delivery.push.payload import URGENCY
from diagnoxix.json_encoding import encode_json
from diagnoxix.models import BROADCAST_RECIPIENT
from diagnoxix.store.protocols import Correction
from diagnoxix.store.push_records import PUSH_OWNER
from diagnoxix.store.timer_records import NewTimer, Timer

PUSH_RETRACT = "push_retract"
PUSH_RETRACT_SEND = "push_retract_send"
TOPIC_PREFIX = "diagnoxix-"


class PushRetractions:
    """The correction listener (`corrected`) and the handler of `push_retract` jobs."""

    def __init__(self, store: PushJobStore, clock: Clock, subscribed: set[str]) -> None:
        self._store = store
        self._clock = clock
        # The router's users with subscriptions: nobody else was ever pushed to.
        self._subscribed = subscribed
        # Called once jobs are written (the timers' scheduler looks again at what is due).
        self.on_added: Callable[[], None] = lambda: None

    def corrected(self, correction: Correction) -> None:
        """Correction listener: synchronous, awaits nothing."""
        if correction.kind != "retracted" or correction.user_id == BROADCAST_RECIPIENT:
            return
        if correction.user_id not in self._subscribed:
            return
        job = NewTimer(
            PUSH_RETRACT, PUSH_OWNER, self._clock.now(), {"notification_id": correction.notification_id}
        )
        self._store.queue_push_jobs([job], lambda _count: self.on_added())

    async def __call__(self, job: Timer) -> None:
        nid = str(job.payload["notification_id"])
        topics: dict[str, str] = {}
        for attempt in (await self._store.push_attempts([nid])).get(nid, []):
            if attempt.outcome == "sent" and attempt.topic:
                topics[attempt.subscription_id] = attempt.topic
        now = self._clock.now()
        sends = [
            NewTimer(
                PUSH_RETRACT_SEND, PUSH_OWNER, now, {"retracted": nid, "subscription_id": sid, "topic": topic}
            )
            for sid, topic in sorted(topics.items())
        ]
        await self._store.route_push(job.id, sends)


class RetractionSendJobs(PushSendJobs):
    """The handler of `push_retract_send` jobs: `{"retracted": id}` with the first push's Topic and
    that priority's Urgency, recorded against the notification without a topic of its own."""

    async def _send(self, job: Timer) -> None:
        nid = str(job.payload["retracted"])
        topic = str(job.payload["topic"])
        sub = await self._store.get_push_subscription(str(job.payload["subscription_id"]))
        if sub is None:
            await self._store.finish_push(job.id, None)
            return
        priority = topic.removeprefix(TOPIC_PREFIX)
        await self._deliver(
            job,
            nid,
            sub,
            encode_json({"retracted": nid}).encode("utf-8"),
            ttl=self._ttl,
            urgency=URGENCY.get(priority, "normal"),
            topic=topic,
            recorded_topic=None,
        )
