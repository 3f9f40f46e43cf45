"""Scheduled sends: a validated send stored as a durable timer, sent when it is due.

The drafts are validated (and typed ones worded) when the send is scheduled, so a due send never
fails validation. One job per notification: its payload holds the draft as validated (`content`,
which the store removes once it is sent, cancelled or failed) and, kept for listing, its
recipient and type. A sent notification is an ordinary one from then on.

A critical one (priority `critical`, or scheduled with `requires_ack`) opens a critical item when
it is due (`CriticalService.open`), in the transaction that finishes its job: exactly once, and
never once the send was cancelled. The job's payload then names the item (`critical_id`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from diagnoxix.delivery.critical import CriticalService
from diagnoxix.delivery.service import NotificationService
from diagnoxix.models import Links, NotificationDraft, Priority
from diagnoxix.store.protocols import KeyStore, timer_claim
from diagnoxix.store.timer_records import NewTimer, Timer

# The kind of timer a scheduled send is.
SCHEDULED_SEND = "scheduled_send"


def scheduled_send(
    owner: str, draft: NotificationDraft, due_at: datetime, key: str | None, *, requires_ack: bool = False
) -> NewTimer:
    """The job that sends this validated draft at `due_at` (`owner`: who may see and cancel it);
    `requires_ack`: it opens a critical item when due (as a critical priority does)."""
    payload: dict[str, Any] = {
        "user_id": draft.user_id,
        "type": draft.type,
        "content": {"notifications": [_encode(draft)]},
    }
    if requires_ack:
        payload["requires_ack"] = True
    return NewTimer(kind=SCHEDULED_SEND, owner=owner, due_at=due_at, payload=payload, key=key)


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

    def __init__(
        self, service: NotificationService, audit: KeyStore, critical: CriticalService | None = None
    ) -> None:
        self._service = service
        self._audit = audit
        self._critical = critical

    async def __call__(self, job: Timer) -> None:
        drafts = scheduled_drafts(job)
        tracked = bool(job.payload.get("requires_ack")) or any(d.priority == "critical" for d in drafts)
        if self._critical is not None and tracked and len(drafts) == 1:
            await self._open(job, drafts[0])
            return
        notes = await self._service.send(drafts, idempotency=timer_claim(job.id))
        target = notes[0].user_id if len(notes) == 1 else None
        self._audit.record_audit(
            job.owner,
            "notification.scheduled_sent",
            target,
            {"schedule_id": job.id, "count": len(notes), "first_seq": notes[0].seq},
        )

    async def _open(self, job: Timer, draft: NotificationDraft) -> None:
        """A critical send: its item opens (and the job is done) in one transaction."""
        assert self._critical is not None
        item, notes = await self._critical.open(
            job.owner, draft, target=f"user:{draft.user_id}", requires_ack=True, claim_timer=job.id
        )
        self._audit.record_audit(
            job.owner,
            "notification.scheduled_sent",
            draft.user_id,
            {"schedule_id": job.id, "critical_id": item.id, "count": len(notes)},
        )
