"""Digests on the push channel (`delivery.digests`): when a user's window of a digested type ends,
ONE push per subscription names every notification of it still undelivered.

`push_digest` (the digest itself, joined by the routing jobs): closed when due, in the transaction
that adds one `push_digest_send` job per subscription of the user. Each send reads the closed
digest's ids, leaves out what was delivered, retracted or expired meanwhile (nothing left: no
push), and posts one push whose payload lists the ids under a counted title ("3 new messages from
your clinic"; a type of `DIAGNOXIX_PUSH_TITLED_TYPES` says its newest title and how many more),
with the Topic and Urgency of the highest priority among them. Its answer is recorded against the
newest notification (the one a click opens), through the same outbox as every push.
"""

from __future__ import annotations

from collections.abc import Sequence

from diagnoxix.clock import Clock
from diagnoxix.delivery.digests import closed_digest, highest_priority
from diagnoxix.delivery.push.jobs import PushJobStore, PushSendJobs
from diagnoxix.delivery.push.payload import URGENCY, push_ttl
from diagnoxix.json_encoding import encode_json
from diagnoxix.models import Notification
from diagnoxix.store.push_records import PUSH_OWNER
from diagnoxix.store.timer_records import NewTimer, Timer

PUSH_DIGEST_SEND = "push_digest_send"


def digest_title(notes: Sequence[Notification], titled_types: tuple[str, ...]) -> str:
    newest = notes[-1]
    if newest.type in titled_types:
        return newest.title if len(notes) == 1 else f"{newest.title} (+{len(notes) - 1} more)"
    if len(notes) == 1:
        return "New message from your clinic"
    return f"{len(notes)} new messages from your clinic"


def digest_payload(notes: Sequence[Notification], titled_types: tuple[str, ...]) -> bytes:
    """The digest push's plaintext: the ids (oldest first), their count and the title; no words."""
    body = {"ids": [n.id for n in notes], "count": len(notes), "title": digest_title(notes, titled_types)}
    return encode_json(body).encode("utf-8")


class PushDigestJobs:
    """The handler of `push_digest` jobs: closes the digest with its sends, one per subscription."""

    def __init__(self, store: PushJobStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def __call__(self, job: Timer) -> None:
        user = str(job.payload["user_id"])
        subscriptions = (await self._store.push_subscriptions_of([user])).get(user, [])
        now = self._clock.now()
        sends = [
            NewTimer(PUSH_DIGEST_SEND, PUSH_OWNER, now, {"digest_id": job.id, "subscription_id": sub.id})
            for sub in subscriptions
        ]
        await self._store.route_push(job.id, sends)


class DigestSendJobs(PushSendJobs):
    """The handler of `push_digest_send` jobs: a push send whose payload is the digest's."""

    async def _send(self, job: Timer) -> None:
        store = self._store
        digest = await closed_digest(store, str(job.payload["digest_id"]))
        ids = [str(i) for i in digest.payload.get("notification_ids", [])] if digest else []
        notes = sorted(
            (n for n in (await store.get_notifications(ids) if ids else []) if n.delivered_at is None),
            key=lambda n: n.seq,
        )
        sub = await store.get_push_subscription(str(job.payload["subscription_id"]))
        if sub is None or not notes:
            await store.finish_push(job.id, None)
            return
        priority = highest_priority(notes)
        now = self._clock.now().timestamp()
        await self._deliver(
            job,
            notes[-1].id,
            sub,
            digest_payload(notes, self._titled),
            ttl=min(push_ttl(n, now, self._ttl) for n in notes),
            urgency=URGENCY.get(priority, "normal"),
            topic=f"diagnoxix-{priority}",
            recorded_topic=None,
        )
