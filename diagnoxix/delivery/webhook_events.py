"""What other features send by webhook (docs/webhooks.md): critical results and action answers.

An escalation step naming the `webhook` channel enqueues a `critical.escalated` event in the
durable outbox, to every endpoint subscribed to it (the clinic's paging or SMS gateway); a
person's acknowledgement enqueues `critical.acknowledged` (the sender's webhook). Ids only, as
every webhook: the item, the step, who was told, the type and priority, never the words. A user's
answer to one of a notification's actions enqueues `notification.action_answered`, naming the API
key that sent the notification (`sent_by`), so the gateway hands it to that backend.
"""

from __future__ import annotations

from typing import Any

from diagnoxix.delivery.actions import ActionAnswers, AnsweredAction
from diagnoxix.delivery.critical import CriticalService, Escalation
from diagnoxix.delivery.webhooks import Webhooks
from diagnoxix.models import format_timestamp
from diagnoxix.rules.webhooks import CRITICAL_ACKNOWLEDGED, CRITICAL_ESCALATED, NOTIFICATION_ACTION_ANSWERED
from diagnoxix.store.critical_records import CriticalItem

WEBHOOK = "webhook"


class NoWebhookEndpoint(Exception):
    """No enabled endpoint takes `critical.escalated`: the step could not go out on this channel."""


class CriticalWebhooks:
    def __init__(self, webhooks: Webhooks) -> None:
        self._webhooks = webhooks

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
        """Told right after the acknowledgement committed (a listener must not wait)."""
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
        self._webhooks.enqueue_soon(CRITICAL_ACKNOWLEDGED, data)


class ActionWebhooks:
    def __init__(self, webhooks: Webhooks) -> None:
        self._webhooks = webhooks

    def attach(self, actions: ActionAnswers) -> None:
        actions.add_listener(self.answered)

    def answered(self, answer: AnsweredAction) -> None:
        """Told right after the first answer is durable (a listener must not wait)."""
        data: dict[str, Any] = {
            "notification_id": answer.notification_id,
            "user_id": answer.user_id,
            "type": answer.type,
            "action": answer.action,
            "answered_at": format_timestamp(answer.answered_at),
            "sent_by": answer.sent_by,
        }
        self._webhooks.enqueue_soon(NOTIFICATION_ACTION_ANSWERED, data)
