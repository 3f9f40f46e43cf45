"""Scheduled sends: a validated send stored as a durable timer, sent when it is due.

The drafts are validated (and typed ones worded) when the send is scheduled, so a due send never
fails validation. One job per notification: its payload holds the draft as validated (`content`,
which the store removes once it is sent, cancelled or failed) and, kept for listing, its
recipient and type. A sent notification is an ordinary one from then on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from diagnoxix.delivery.service import NotificationService
from diagnoxix.models import Links, NotificationDraft, Priority
from diagnoxix.store.protocols import KeyStore, timer_claim
from diagnoxix.store.timer_records import NewTimer, Timer

# The kind of timer a scheduled send is.
SCHEDULED_SEND = "scheduled_send"


def scheduled_send(owner: str, draft: NotificationDraft, due_at: datetime, key: str | None) -> NewTimer:
    """The job that sends this validated draft at `due_at` (`owner`: who may see and cancel it)."""
    return NewTimer(
        kind=SCHEDULED_SEND,
        owner=owner,
        due_at=due_at,
        payload={
            "user_id": draft.user_id,
            "type": draft.type,
            "content": {"notifications": [_encode(draft)]},
        },
        key=key,
    )


def _encode(draft: NotificationDraft) -> dict[str, Any]:
    return {
        "user_id": draft.user_id,
        "type": draft.type,
        "title": draft.title,
        "message": draft.message,
        "data": draft.data,
        "priority": draft.priority,
        "ttl_seconds": draft.ttl_seconds,
        "links": draft.links.stored_json() if draft.links is not None else None,
    }


def _decode(item: dict[str, Any]) -> NotificationDraft:
    return NotificationDraft(
        user_id=str(item["user_id"]),
        type=str(item["type"]),
        title=str(item["title"]),
        message=str(item["message"]),
        data=dict(item["data"]),
        priority=cast(Priority, item["priority"]),
        ttl_seconds=item.get("ttl_seconds"),
        links=Links.from_stored(item.get("links")),
    )


def scheduled_drafts(job: Timer) -> list[NotificationDraft]:
    return [_decode(item) for item in job.payload["content"]["notifications"]]


class ScheduledSends:
    """The handler of `SCHEDULED_SEND` jobs: stores the drafts with the job's claim (so the job is
    done in the same transaction, once), then they are delivered like any send."""

    def __init__(self, service: NotificationService, audit: KeyStore) -> None:
        self._service = service
        self._audit = audit

    async def __call__(self, job: Timer) -> None:
        notes = await self._service.send(scheduled_drafts(job), idempotency=timer_claim(job.id))
        target = notes[0].user_id if len(notes) == 1 else None
        self._audit.record_audit(
            job.owner,
            "notification.scheduled_sent",
            target,
            {"schedule_id": job.id, "count": len(notes), "first_seq": notes[0].seq},
        )
