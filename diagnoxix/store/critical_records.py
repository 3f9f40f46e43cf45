"""The records and the protocol of critical results (`CriticalStore`): groups and their members,
items that stay open until a person acknowledges them, their copies and their timeline.

An item's sends are durable timers owned by `critical_owner(item id)`: the store records the copies
a send stored in that send's own transaction, and acknowledging an item cancels its pending steps
in the transaction that closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from diagnoxix.store.correction_records import Correction
from diagnoxix.store.timer_records import NewTimer

CRITICAL_OWNER_PREFIX = "critical:"
CriticalState = Literal["open", "acknowledged", "sent"]


def critical_owner(item_id: str) -> str:
    """The owner of an item's timers (its sends and escalation steps)."""
    return CRITICAL_OWNER_PREFIX + item_id


@dataclass(frozen=True, slots=True)
class GroupMember:
    group: str
    user_id: str
    on_duty: bool
    added_at: datetime


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    created_at: datetime
    members: int = 0
    on_duty: int = 0


@dataclass(frozen=True, slots=True)
class NewCriticalItem:
    id: str
    owner: str
    # 'user:<id>' or 'group:<name>'
    target: str
    type: str
    priority: str
    requires_ack: bool
    policy: str | None
    request_hash: str | None = None


@dataclass(frozen=True, slots=True)
class CriticalItem:
    id: str
    owner: str
    target: str
    type: str
    priority: str
    requires_ack: bool
    policy: str | None
    state: CriticalState
    created_at: datetime
    request_hash: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_via: str | None = None
    device: str | None = None
    on_behalf: bool = False
    # When the next escalation step is due (None: no step is pending).
    next_step_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CriticalCopy:
    notification_id: str
    user_id: str
    step: int
    delivered_at: datetime | None
    read_at: datetime | None


@dataclass(frozen=True, slots=True)
class CriticalEvent:
    """One step of an item's life, as recorded (append-only). Never the notification's words."""

    item_id: str
    event: str
    at: datetime | None = None
    step: int | None = None
    channel: str | None = None
    user_id: str | None = None
    actor: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """Who acknowledged, how: `via` 'socket', 'http' or 'dashboard'; `device` a token id."""

    by: str
    via: str
    device: str | None = None
    on_behalf: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AcknowledgeResult:
    """`done`: this call closed the item (`corrections`: one `acknowledged` event per live copy,
    in seq order); `already`: it was closed before; `not_found`: no such item."""

    outcome: Literal["done", "already", "not_found"]
    item: CriticalItem | None = None
    corrections: tuple[Correction, ...] = ()


class CriticalItemExists(Exception):
    """An item with this id exists already (an idempotent retry): nothing new was stored."""


class CriticalStore(Protocol):
    async def put_group(self, name: str) -> bool:
        """Create the group; False when it exists already."""

    async def delete_group(self, name: str) -> bool: ...

    async def list_groups(self) -> list[Group]: ...

    async def group_members(self, name: str) -> list[GroupMember] | None:
        """The group's members (None: no such group)."""

    async def set_group_member(self, name: str, user_id: str, on_duty: bool) -> bool:
        """Add the member or change their on-duty switch; False: no such group."""

    async def remove_group_member(self, name: str, user_id: str) -> bool: ...

    async def open_critical(
        self, item: NewCriticalItem, sends: Sequence[NewTimer], *, claim_timer: str | None = None
    ) -> CriticalItem:
        """Store the item, its `opened` event and its sends (timers owned by `critical_owner`) in
        one transaction. Raises CriticalItemExists when the id is taken. With `claim_timer`, that
        job (a scheduled send) is done in the same transaction, its payload naming the item
        (`critical_id`); raises IdempotencyConflict when it ran or was cancelled already."""

    async def critical_item(self, item_id: str) -> CriticalItem | None: ...

    async def critical_item_of(self, notification_id: str) -> CriticalItem | None:
        """The item a notification is a copy of."""

    async def critical_copies(self, item_id: str) -> list[CriticalCopy]:
        """Oldest first; a copy whose notification expired or was retracted is left out."""

    async def critical_items(self, *, open_only: bool, limit: int) -> list[CriticalItem]:
        """Newest first."""

    async def critical_timeline(self, item_id: str) -> list[CriticalEvent]:
        """Oldest first."""

    async def acknowledge_critical(self, item_id: str, ack: Acknowledgement) -> AcknowledgeResult:
        """Close an open item for every recipient, cancel its pending steps and record who: one
        transaction. Each live copy gets an `acknowledged` correction with a seq of its own."""

    async def finish_critical_step(self, timer_id: str, events: Sequence[CriticalEvent]) -> None:
        """A step that stored no notification is done, with its events, in one transaction.
        Raises IdempotencyConflict when the step ran or was cancelled already."""

    def record_critical_events(self, events: Sequence[CriticalEvent]) -> None:
        """Append events without waiting (committed with the next batch)."""
