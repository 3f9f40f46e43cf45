"""Digests (`DIAGNOXIX_DIGEST`, docs/channels.md): several notifications of one type for one user
within a window go out as ONE push and ONE webhook event; the socket still gets each at once.

A digest is a durable timer (`delivery.timers`) under the key (user, type), due when its window
ends. The first notification of a window starts it; later ones join it: one upsert, committed
with what decided it (the push routing job's claim, the webhook rules' cursor), so a join is made
once across restarts and kill -9 (`store.sqlite.digests`).

When the window ends the digest job is closed (claimed, so it is no longer pending and no join can
change it; the next notification starts a new window) in the transaction that adds its sends:
push sends per subscription (`delivery.push.digest`), or one webhook event job (here). Those read
the closed digest's ids when they run, so a notification that joined in the instant before the
close is never left out.

Critical notifications (priority `critical`, or a type in `DIAGNOXIX_CRITICAL_CATEGORIES`) and
broadcasts are never gathered: they go on their own, at once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from diagnoxix.clock import Clock
from diagnoxix.delivery.webhooks import Webhooks
from diagnoxix.models import PRIORITIES, Notification, format_timestamp
from diagnoxix.rules.webhooks import NOTIFICATION_DIGEST
from diagnoxix.store.protocols import NotificationStore, PushStore, TimerStore
from diagnoxix.store.timer_records import NewTimer, Timer

# The digests' jobs: their owner (no API key owns them) and kinds.
DIGEST_OWNER = "system:digest"
PUSH_DIGEST = "push_digest"
WEBHOOK_DIGEST = "webhook_digest"
# One per closed webhook digest: puts its `notification.digest` event in the outbox.
WEBHOOK_DIGEST_EVENT = "webhook_digest_event"


def digest_key(user_id: str, type_: str) -> str:
    return json.dumps([user_id, type_])


def highest_priority(notes: Sequence[Notification]) -> str:
    return max((n.priority for n in notes), key=lambda p: PRIORITIES.index(p) if p in PRIORITIES else 0)


class Digests:
    """Which notifications are gathered, and the join that puts one in its window's digest."""

    def __init__(self, windows: Collection[tuple[str, int]], critical_categories: Collection[str]) -> None:
        self._windows = dict(windows)
        self._critical = frozenset(critical_categories)

    def __bool__(self) -> bool:
        return bool(self._windows)

    def digested(self, note: Notification) -> bool:
        return (
            note.type in self._windows
            and not note.is_broadcast
            and note.priority != "critical"
            and note.type not in self._critical
        )

    def join(self, kind: str, note: Notification, start: datetime) -> NewTimer:
        """The job that starts the user's digest of this type (due `start` plus the window), or,
        when one is pending, adds this notification to it."""
        return NewTimer(
            kind=kind,
            owner=DIGEST_OWNER,
            due_at=start + timedelta(seconds=self._windows[note.type]),
            payload={"user_id": note.user_id, "type": note.type, "notification_ids": [note.id]},
            key=digest_key(note.user_id, note.type),
        )


class _Store(NotificationStore, PushStore, TimerStore, Protocol):
    pass


async def closed_digest(store: TimerStore, digest_id: str) -> Timer | None:
    """A closed digest job (its ids no longer change)."""
    found = await store.get_timers(DIGEST_OWNER, [digest_id])
    return found[0] if found else None


class WebhookDigestJobs:
    """The handler of `WEBHOOK_DIGEST` jobs: closes the digest, adding its event's job."""

    def __init__(self, store: _Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def __call__(self, job: Timer) -> None:
        event = NewTimer(WEBHOOK_DIGEST_EVENT, DIGEST_OWNER, self._clock.now(), {"digest_id": job.id})
        await self._store.route_push(job.id, [event])


class WebhookDigestEvents:
    """The handler of `WEBHOOK_DIGEST_EVENT` jobs: `notification.digest` with the ids of the
    digest's notifications still there (a retracted or expired one is left out), in the outbox,
    claiming the job in the same write."""

    def __init__(self, store: _Store, webhooks: Webhooks) -> None:
        self._store = store
        self._webhooks = webhooks

    async def __call__(self, job: Timer) -> None:
        digest = await closed_digest(self._store, str(job.payload["digest_id"]))
        ids = [str(i) for i in digest.payload.get("notification_ids", [])] if digest else []
        notes = await self._store.get_notifications(ids) if ids else []
        if digest is None or not notes:
            await self._store.finish_timer(job.id)
            return
        await self._webhooks.enqueue_many(
            [(NOTIFICATION_DIGEST, digest_data(digest, notes))], claim_timer=job.id
        )


def digest_data(digest: Timer, notes: Sequence[Notification]) -> dict[str, Any]:
    """What a `notification.digest` event says: ids, user, type, count; never words."""
    ordered = sorted(notes, key=lambda n: n.seq)
    return {
        "notification_ids": [n.id for n in ordered],
        "user_id": str(digest.payload["user_id"]),
        "type": str(digest.payload["type"]),
        "count": len(ordered),
        "priority": highest_priority(ordered),
        "first_created_at": format_timestamp(ordered[0].created_at),
        "last_created_at": format_timestamp(ordered[-1].created_at),
    }
