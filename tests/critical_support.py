"""Helpers of the critical results' store tests: an item with its sends, a send stored the way the
scheduler stores it (its notifications with its job's claim)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from diagnoxix.models import Notification, NotificationDraft
from diagnoxix.store.critical_records import CriticalItem, NewCriticalItem, critical_owner
from diagnoxix.store.protocols import timer_claim
from diagnoxix.store.timer_records import NewTimer

CRITICAL_SEND = "critical_send"


async def open_item(
    store: Any,
    item_id: str,
    *,
    target: str = "user:u1",
    requires_ack: bool = True,
    steps: Sequence[int] = (),
    claim_timer: str | None = None,
    owner: str = "apikey:k1",
) -> CriticalItem:
    """Open an item whose first send is due now and one escalation step per delay in `steps`."""
    now = store._clock.now()
    sends = [
        NewTimer(
            CRITICAL_SEND,
            critical_owner(item_id),
            now + timedelta(seconds=after),
            {"item": item_id, "step": step, "to": target, "type": "lab", "content": {"title": "K+ 6.9"}},
        )
        for step, after in enumerate([0, *steps])
    ]
    new = NewCriticalItem(item_id, owner, target, "lab", "critical", requires_ack, "lab" if steps else None)
    return await store.open_critical(new, sends, claim_timer=claim_timer)  # type: ignore[no-any-return]


async def send_step(
    store: Any, item_id: str, step: int, users: Sequence[str], **fields: Any
) -> list[Notification]:
    """The item's step `step` stores a copy for each user, with its job's claim."""
    drafts = [
        NotificationDraft(
            user_id=user,
            type="lab",
            title="K+ 6.9",
            message="call the ward",
            data={},
            priority="critical",
            **fields,
        )
        for user in users
    ]
    return await store.insert_notifications(drafts, timer_claim(f"{item_id}.{step}"))  # type: ignore[no-any-return]


def plain_drafts(users: Sequence[str]) -> list[NotificationDraft]:
    """Ordinary notifications, no item's copies."""
    return [
        NotificationDraft(user_id=u, type="custom", title="t", message="m", data={}, priority="normal")
        for u in users
    ]
