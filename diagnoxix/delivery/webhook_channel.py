"""The webhook channel assembled: the outbox's front door (`Webhooks`), the sender, the rules and
their checks, with the timers' handlers they need. `app.py` wires it in one place."""

from __future__ import annotations

import asyncio
import contextlib

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.digests import (
    WEBHOOK_DIGEST,
    WEBHOOK_DIGEST_EVENT,
    Digests,
    WebhookDigestEvents,
    WebhookDigestJobs,
)
from diagnoxix.delivery.preferences import ChannelPreferences
from diagnoxix.delivery.timers import Handler
from diagnoxix.delivery.webhook_sender import WebhookSender
from diagnoxix.delivery.webhook_triggers import UNACKNOWLEDGED_CHECK, UnacknowledgedChecks, WebhookTriggers
from diagnoxix.delivery.webhooks import Webhooks
from diagnoxix.store.protocols import Store
from diagnoxix.store.webhook_records import WEBHOOK_DELIVERY


class WebhookChannel:
    def __init__(self, store: Store, clock: Clock, settings: Settings) -> None:
        self.webhooks = Webhooks(store, clock)
        self.sender = WebhookSender(store, clock, settings)
        # Each user's channel preferences and quiet hours (critical notifications ignore them).
        chosen = ChannelPreferences(store, clock, settings.critical_categories)
        digests = Digests(settings.digest_windows, settings.critical_categories)
        self.triggers = WebhookTriggers(store, self.webhooks, settings.webhook_rules, chosen, digests)
        self.handlers: dict[str, Handler] = {
            WEBHOOK_DELIVERY: self.sender,
            UNACKNOWLEDGED_CHECK: UnacknowledgedChecks(store, self.webhooks, chosen),
            WEBHOOK_DIGEST: WebhookDigestJobs(store, clock),
            WEBHOOK_DIGEST_EVENT: WebhookDigestEvents(store, self.webhooks),
        }
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Before the timers run and before the server commits anything."""
        await self.sender.start()
        await self.triggers.start()
        self._task = asyncio.create_task(self.triggers.run(), name="diagnoxix-webhook-rules")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sender.close()
