"""Critical results on the webhook channel (docs/critical.md, docs/webhooks.md).

An escalation step naming the `webhook` channel enqueues a `critical.escalated` event in the
durable outbox, to every endpoint subscribed to it (the clinic's paging or SMS gateway); a
person's acknowledgement enqueues `critical.acknowledged` (the sender's webhook). Ids only, as
every webhook: the item, the step, who was told, the type and priority, never the words.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from diagnoxix.delivery.critical import CriticalService, Escalation
from diagnoxix.delivery.webhooks import Webhooks
from diagnoxix.models import format_timestamp
from diagnoxix.rules.webhooks import CRITICAL_ACKNOWLEDGED, CRITICAL_ESCALATED
from diagnoxix.store.critical_records import CriticalItem
from diagnoxix.store.protocols import StoreError

log = logging.getLogger("diagnoxix.critical")

WEBHOOK = "webhook"


class NoWebhookEndpoint(Exception):
    """No enabled endpoint takes `critical.escalated`: the step could not go out on this channel."""


class CriticalWebhooks:
    def __init__(self, webhooks: Webhooks) -> None:
        self._webhooks = webhooks
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, critical: CriticalService) -> None:
        critical.register_channel(WEBHOOK, self.escalated)
        critical.add_acknowledged_listener(self.acknowledged)

    async def escalated(self, escalation: Escalation) -> None:
        """The step's event, durable in the outbox once this returns; raises when no endpoint
        takes it (the item's timeline then says the channel failed)."""
        ids = await self._webhooks.enqueue(
            CRITICAL_ESCALATED,
            {
                "critical_id": escalation.item_id,
                "step": escalation.step,
                "user_ids": list(escalation.user_ids),
                "type": escalation.type,
                "priority": escalation.priority,
            },
        )
        if not ids:
            raise NoWebhookEndpoint(f"no enabled webhook endpoint takes {CRITICAL_ESCALATED}")

    def acknowledged(self, item: CriticalItem) -> None:
        """Told right after the acknowledgement committed; the event is enqueued in a task of its
        own (a listener must not wait)."""
        at = item.acknowledged_at
        data: dict[str, Any] = {
            "critical_id": item.id,
            "type": item.type,
            "priority": item.priority,
            "acknowledged_at": None if at is None else format_timestamp(at),
            "acknowledged_by": item.acknowledged_by,
            "via": item.acknowledged_via,
            "on_behalf": item.on_behalf,
        }
        task = asyncio.get_running_loop().create_task(self._enqueue(item.id, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enqueue(self, item_id: str, data: dict[str, Any]) -> None:
        try:
            await self._webhooks.enqueue(CRITICAL_ACKNOWLEDGED, data)
        except StoreError as exc:
            log.warning(
                "critical.acknowledged_webhook_failed", extra={"item": item_id, "error": type(exc).__name__}
            )
