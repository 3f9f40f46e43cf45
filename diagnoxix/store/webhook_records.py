"""Outgoing webhooks in the store (`WebhookStore`): endpoints, and deliveries as durable timers.

A delivery is a timer of kind `WEBHOOK_DELIVERY` (its id is the delivery's `webhook-id`), so it
survives a restart or a kill -9 like any job. Its payload names the endpoint and the event type;
its `content` holds the signed body, kept while the delivery is pending or dead and removed once
it is delivered. A delivery that gave up is a dead letter (state `failed`) until staff send it
again (`revive_dead_webhook`) or the finished jobs' purge removes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from diagnoxix.models import Notification
from diagnoxix.store.timer_records import NewTimer, Timer

# The kind of timer one delivery to one endpoint is, and the owner of every webhook job.
WEBHOOK_DELIVERY = "webhook"
WEBHOOKS_OWNER = "webhooks"
# The meta key of the highest seq whose notifications the webhook rules have been applied to.
WEBHOOK_RULES_CURSOR = "webhook_rules_through_seq"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str
    url: str
    # `whsec_<base64>`: what signs every delivery; never logged, shown to staff once.
    secret: str
    events: tuple[str, ...]
    description: str
    enabled: bool
    created_at: datetime
    created_by: str


class WebhookStore(Protocol):
    """Endpoints (staff configure them) and the deliveries' outbox on top of durable timers."""

    async def create_webhook_endpoint(
        self, url: str, secret: str, events: Sequence[str], description: str, created_by: str
    ) -> WebhookEndpoint: ...

    async def webhook_endpoints(self) -> list[WebhookEndpoint]:
        """Every endpoint, oldest first."""

    async def set_webhook_endpoint_enabled(self, endpoint_id: str, enabled: bool) -> bool:
        """False: no such endpoint."""

    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        """False: no such endpoint. Its pending deliveries are cancelled when they come due."""

    async def enqueue_webhooks(
        self,
        timers: Sequence[NewTimer],
        *,
        through_seq: int | None = None,
        claim_timer: str | None = None,
        joins: Sequence[NewTimer] = (),
    ) -> list[str]:
        """Store jobs (deliveries, rule checks) in one transaction, returning their ids once
        durable. With `through_seq`, the rules' cursor moves up to it in the same transaction; with
        `claim_timer`, that job is done in it too (a second attempt: IdempotencyConflict); `joins`
        join digests (see `PushStore.route_push`) in it too."""

    def note_webhook_rules_through(self, seq: int) -> None:
        """Move the rules' cursor without waiting (nothing matched; losing it costs a re-check)."""

    async def webhook_rules_cursor(self) -> int | None:
        """The highest seq the rules were applied to; None: never (the feature is new here)."""

    async def notifications_between(self, after_seq: int, upto_seq: int, *, limit: int) -> list[Notification]:
        """Every user's own notifications (no broadcasts) in (after_seq, upto_seq], oldest first."""

    async def webhook_attempt_failed(self, timer_id: str, due_at: datetime | None, error: str) -> None:
        """Count a failed attempt and keep its error: try again at `due_at`, or (None) the delivery
        is dead (its body kept for a retry by staff)."""

    async def webhook_deliveries_of(self, notification_ids: Sequence[str]) -> dict[str, list[Timer]]:
        """The deliveries of events naming these notifications (`notification.created`,
        `notification.unacknowledged`), in any state, oldest first, by notification id."""

    async def dead_webhooks(self, *, limit: int) -> list[Timer]:
        """Dead letters, the most recently dead first."""

    async def count_dead_webhooks(self) -> int: ...

    async def revive_dead_webhook(self, timer_id: str, actor: str) -> bool:
        """Make a dead letter pending again, due now, with a fresh retry window (same webhook-id).
        False: no dead letter with this id, or its body is gone."""
