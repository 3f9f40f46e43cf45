"""Critical results: items that stay open until a person acknowledges them, and their escalation.

An item is one send that must be seen: to a user, or to a group (each member on duty gets their own
copy, with its own seq, receipts and read state, tied together by the item's id, the group-send
id). Its sends are durable timers (`delivery.timers`), owned by `critical_owner(item id)`: the
first send, due at once (run here right away), and one per step of the escalation policy that
matched its type and priority (`rules.escalation`), due that long after. Each send stores its copies
with its job's claim, so a step due while the server was down runs once after it comes back, never
twice; acknowledging cancels the steps still pending, in the transaction that closes the item.

Channels other than the socket (`push`, `webhook`) go through `ChannelSender`s registered by the
assembly (`register_channel`); a step naming one that is not registered records
`channel_not_configured` and carries on. Whoever must hear of an acknowledgement (the sender's
webhook) registers with `add_acknowledged_listener`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

from diagnoxix.clock import Clock
from diagnoxix.delivery.broker import Broker
from diagnoxix.delivery.service import NotificationService
from diagnoxix.models import Notification, NotificationDraft, Priority, new_ids
from diagnoxix.rules.escalation import Policy, match_policy
from diagnoxix.store.critical_records import (
    Acknowledgement,
    AcknowledgeResult,
    CriticalEvent,
    CriticalItem,
    CriticalStore,
    NewCriticalItem,
    critical_owner,
)
from diagnoxix.store.protocols import (
    IdempotencyConflict,
    NotificationStore,
    StoreError,
    TimerStore,
    timer_claim,
)
from diagnoxix.store.timer_records import NewTimer, Timer

log = logging.getLogger("diagnoxix.critical")

# The kind of timer an item's sends are (its first send is step 0).
CRITICAL_SEND = "critical_send"


class Store(CriticalStore, NotificationStore, TimerStore, Protocol):
    """What critical results need of the store."""


@dataclass(frozen=True, slots=True)
class Escalation:
    """What an outside channel is asked to carry: never the notification's words (the channel
    links back to the item; the app shows it to a signed-in person)."""

    item_id: str
    step: int
    channel: str
    user_ids: tuple[str, ...]
    type: str
    priority: str


# An outside channel (`push`, `webhook`): raises when it could not take the escalation.
ChannelSender = Callable[[Escalation], Awaitable[None]]
# Told of every item acknowledged (after the commit); must not block.
AcknowledgedListener = Callable[[CriticalItem], None]


def _encode(draft: NotificationDraft) -> dict[str, Any]:
    return {
        "type": draft.type,
        "title": draft.title,
        "message": draft.message,
        "data": draft.data,
        "priority": draft.priority,
        "ttl_seconds": draft.ttl_seconds,
    }


def _decode(content: dict[str, Any], user_id: str) -> NotificationDraft:
    return NotificationDraft(
        user_id=user_id,
        type=str(content["type"]),
        title=str(content["title"]),
        message=str(content["message"]),
        data=dict(content["data"]),
        priority=cast(Priority, content["priority"]),
        ttl_seconds=content.get("ttl_seconds"),
    )


class CriticalService:
    def __init__(
        self,
        store: Store,
        service: NotificationService,
        broker: Broker,
        clock: Clock,
        policies: Sequence[Policy],
    ) -> None:
        self._store = store
        self._service = service
        self._broker = broker
        self._clock = clock
        self.policies = tuple(policies)
        self._channels: dict[str, ChannelSender] = {}
        self._listeners: list[AcknowledgedListener] = []
        # Set by the assembly once the timer scheduler exists: a step may be due sooner than
        # the scheduler's current sleep.
        self.wake: Callable[[], None] = lambda: None

    def register_channel(self, name: str, sender: ChannelSender) -> None:
        self._channels[name] = sender

    def add_acknowledged_listener(self, listener: AcknowledgedListener) -> None:
        self._listeners.append(listener)

    # -- sending -----------------------------------------------------------------------------

    async def open(
        self,
        owner: str,
        draft: NotificationDraft,
        *,
        target: str,
        requires_ack: bool,
        item_id: str | None = None,
        request_hash: str | None = None,
        claim_timer: str | None = None,
    ) -> tuple[CriticalItem, list[Notification]]:
        """Open an item (`target`: 'user:<id>' or 'group:<name>') and send it at once; returns
        the item and the copies its first send stored. Raises CriticalItemExists when `item_id`
        is taken (a retry). `claim_timer`: the job whose effect this item is (a scheduled send),
        done in the transaction that opens it (run or cancelled already: IdempotencyConflict)."""
        policy = match_policy(self.policies, draft.type, draft.priority) if requires_ack else None
        now = self._clock.now()
        iid = item_id or new_ids(1, int(now.timestamp() * 1000))[0]
        owner_key = critical_owner(iid)
        content = _encode(draft)

        def send(step: int, to: str, channels: Sequence[str], after: int) -> NewTimer:
            payload = {"item": iid, "step": step, "to": to, "channels": list(channels), "type": draft.type}
            return NewTimer(
                CRITICAL_SEND, owner_key, now + timedelta(seconds=after), payload | {"content": content}
            )

        sends = [send(0, target, ["socket"], 0)]
        steps = policy.steps if policy is not None else ()
        sends += [send(i, s.to, s.channels, s.after_seconds) for i, s in enumerate(steps, start=1)]
        new = NewCriticalItem(
            iid,
            owner,
            target,
            draft.type,
            draft.priority,
            requires_ack,
            policy.name if policy else None,
            request_hash,
        )
        item = await self._store.open_critical(new, sends, claim_timer=claim_timer)
        (first,) = await self._store.get_timers(owner_key, [f"{iid}.0"])
        with contextlib.suppress(IdempotencyConflict):  # the scheduler ran it first
            await self(first)
        if len(sends) > 1:
            self.wake()
        return item, await self.copies(iid)

    async def track(self, sender: str, draft: NotificationDraft) -> Notification:
        """A critical draft to one user, sent in-process (a typed sender, the dashboard's form):
        an item like `POST /v1/notifications` opens; returns its first copy."""
        _, notes = await self.open(sender, draft, target=f"user:{draft.user_id}", requires_ack=True)
        if not notes:  # its first send is being stored by the scheduler this very moment
            raise StoreError("the item's first copy is not stored yet")
        return notes[0]

    async def copies(self, item_id: str) -> list[Notification]:
        copies = await self._store.critical_copies(item_id)
        return await self._store.get_notifications([c.notification_id for c in copies])

    async def __call__(self, job: Timer) -> None:
        """The handler of `CRITICAL_SEND` jobs: one send of an item (the first, or a step)."""
        payload = job.payload
        item_id, step, to = str(payload["item"]), int(payload["step"]), str(payload["to"])
        channels = [str(c) for c in payload.get("channels", ["socket"])]
        recipients = await self._recipients(item_id, to)
        content = payload["content"]
        others = [
            await self._outside(item_id, step, c, recipients, content) for c in channels if c != "socket"
        ]
        if "socket" in channels and recipients:
            drafts = [_decode(content, user) for user in recipients]
            await self._service.send(drafts, idempotency=timer_claim(job.id))
            if others:
                self._store.record_critical_events(others)
            return
        if "socket" in channels:
            others.append(
                CriticalEvent(item_id, "nobody_to_tell", step=step, channel="socket", details={"to": to})
            )
        await self._store.finish_critical_step(job.id, others)

    async def _recipients(self, item_id: str, to: str) -> list[str]:
        kind, _, name = to.partition(":")
        if kind == "user":
            return [name]
        if kind == "group":
            members = await self._store.group_members(name) or []
            return [m.user_id for m in members if m.on_duty]
        # 'same': whoever the first send reached.
        seen: dict[str, None] = {}
        for copy in await self._store.critical_copies(item_id):
            if copy.step == 0:
                seen[copy.user_id] = None
        return list(seen)

    async def _outside(
        self, item_id: str, step: int, channel: str, recipients: list[str], content: dict[str, Any]
    ) -> CriticalEvent:
        sender = self._channels.get(channel)
        if sender is None:
            return CriticalEvent(item_id, "channel_not_configured", step=step, channel=channel)
        escalation = Escalation(
            item_id, step, channel, tuple(recipients), str(content["type"]), str(content["priority"])
        )
        try:
            await sender(escalation)
        except Exception as exc:
            log.warning(
                "critical.channel_failed",
                extra={"item": item_id, "step": step, "channel": channel, "error": type(exc).__name__},
            )
            return CriticalEvent(item_id, "channel_failed", step=step, channel=channel)
        return CriticalEvent(
            item_id, "escalated", step=step, channel=channel, details={"to": len(recipients)}
        )

    # -- acknowledging -----------------------------------------------------------------------

    async def item_of_copy(self, notification_id: str, user_id: str | None) -> CriticalItem | None:
        """The item this notification is a copy of, if the copy is `user_id`'s (None: anyone's)."""
        item = await self._store.critical_item_of(notification_id)
        if item is None or user_id is None:
            return item
        notes = await self._store.get_notifications([notification_id])
        return item if notes and notes[0].user_id == user_id else None

    async def acknowledge(self, item: CriticalItem, ack: Acknowledgement) -> AcknowledgeResult:
        """Close the item for every recipient: each copy's connections get an `acknowledged`
        frame (a seq of its own in the recipient's stream), the rest of the chain is cancelled,
        and the listeners hear of it. Acknowledging again changes nothing (`already`)."""
        result = await self._store.acknowledge_critical(item.id, ack)
        if result.outcome != "done":
            return result
        # Each copy's `acknowledged` frame went out from the commit itself, in seq order.
        assert result.item is not None
        log.info("critical.acknowledged", extra={"item": item.id, "via": ack.via, "on_behalf": ack.on_behalf})
        for listener in self._listeners:
            try:
                listener(result.item)
            except Exception:
                log.exception("critical.listener_failed", extra={"item": item.id})
        return result
