"""Outgoing webhooks: `Webhooks.enqueue(event_type, payload)` puts one signed delivery per
subscribed endpoint in the durable outbox, in one store write.

What other features call: the rules (`delivery.webhook_triggers`) send `notification.created`
and `notification.unacknowledged`; critical results and actions will send their own events.
Each delivery is a durable timer (`store.webhook_records`) that `delivery.webhook_sender` posts,
retrying with exponential backoff (`next_attempt_at`) until the receiver answers 2xx or the
retry window (`DIAGNOXIX_WEBHOOK_RETRY_FOR`, a day by default) is over: then it is dead, a dead
letter staff can send again from the dashboard.

The body is fixed when the event is enqueued (the Standard Webhooks shape: `type`, `timestamp`,
`data`); only the signature's timestamp changes between attempts, and the `webhook-id` (the
delivery's id) never does, so a receiver drops a repeat it has seen.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from diagnoxix.clock import Clock
from diagnoxix.json_encoding import encode_json
from diagnoxix.models import format_timestamp, parse_timestamp
from diagnoxix.store.protocols import Store, StoreError
from diagnoxix.store.timer_records import NewTimer, Timer
from diagnoxix.store.webhook_records import WEBHOOK_DELIVERY, WEBHOOKS_OWNER

log = logging.getLogger("diagnoxix.webhooks")

# The delay before attempt n+1 (n failed so far): FIRST_RETRY_SECONDS * 2**(n-1), at most
# MAX_RETRY_SECONDS; no attempt is made once the retry window is over.
FIRST_RETRY_SECONDS = 10
MAX_RETRY_SECONDS = 3600


def next_attempt_at(job: Timer, now: datetime, retry_for_seconds: int) -> datetime | None:
    """When to try this delivery again after a failed attempt, or None: it is dead."""
    since = parse_timestamp(job.payload["since"]) if "since" in job.payload else job.created_at
    delay = min(FIRST_RETRY_SECONDS * 2 ** min(job.attempts, 20), MAX_RETRY_SECONDS)
    due = now + timedelta(seconds=delay)
    return due if due <= since + timedelta(seconds=retry_for_seconds) else None


def new_webhook_secret() -> str:
    """An endpoint's signing secret as the specification writes it: `whsec_` and 32 random bytes
    in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def event_body(event_type: str, data: dict[str, Any], at: datetime) -> str:
    """What a delivery's POST carries (and what its signature covers)."""
    return encode_json({"type": event_type, "timestamp": format_timestamp(at), "data": data})


class Webhooks:
    """The outbox's front door. `wake` is set once the timers' scheduler exists."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self.wake: Callable[[], None] = lambda: None
        self._soon: set[asyncio.Task[None]] = set()

    def enqueue_soon(self, event_type: str, data: dict[str, Any]) -> None:
        """`enqueue` from a listener that must not wait (it runs right after another commit): in a
        task of its own. A crash before that write commits loses this one event."""
        task = asyncio.get_running_loop().create_task(self._enqueue_logged(event_type, data))
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    async def _enqueue_logged(self, event_type: str, data: dict[str, Any]) -> None:
        try:
            await self.enqueue(event_type, data)
        except StoreError as exc:
            log.warning("webhooks.enqueue_failed", extra={"event": event_type, "error": type(exc).__name__})

    async def enqueue(self, event_type: str, data: dict[str, Any]) -> list[str]:
        """One event to every enabled endpoint subscribed to its type; returns the deliveries'
        ids (their `webhook-id`s) once durable: none when no endpoint wants it."""
        return await self.enqueue_many([(event_type, data)])

    async def enqueue_many(
        self,
        events: Sequence[tuple[str, dict[str, Any]]],
        *,
        also: Sequence[NewTimer] = (),
        through_seq: int | None = None,
        claim_timer: str | None = None,
        joins: Sequence[NewTimer] = (),
    ) -> list[str]:
        """Several events in one write, with other jobs (`also`), digests' joins, the rules' cursor
        and a job's claim (see `WebhookStore.enqueue_webhooks`) in the same transaction."""
        now = self._clock.now()
        since = format_timestamp(now)
        endpoints = [e for e in await self._store.webhook_endpoints() if e.enabled] if events else []
        deliveries = [
            NewTimer(
                kind=WEBHOOK_DELIVERY,
                owner=WEBHOOKS_OWNER,
                due_at=now,
                payload={
                    "endpoint": endpoint.id,
                    "event": event_type,
                    "since": since,
                    "content": {"body": event_body(event_type, data, now)},
                }
                # Kept once delivered: where each notification went (the dashboard's view).
                | ({"notification_id": data["notification_id"]} if "notification_id" in data else {}),
            )
            for event_type, data in events
            for endpoint in endpoints
            if event_type in endpoint.events
        ]
        ids = await self._store.enqueue_webhooks(
            [*deliveries, *also], through_seq=through_seq, claim_timer=claim_timer, joins=joins
        )
        if ids or joins:
            self.wake()
        return ids[: len(deliveries)]
