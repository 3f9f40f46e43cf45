"""Posting one webhook delivery: the handler of the timers' `WEBHOOK_DELIVERY` jobs.

Each attempt is an HTTPS POST of the stored body, signed as the Standard Webhooks specification
says (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
`id.timestamp.body`, with the endpoint's `whsec_` secret; the `standardwebhooks` library signs).
A 2xx answer finishes the delivery at once (one awaited commit: the only window in which a crash
sends it again, with the same `webhook-id`); anything else (another status, a redirect, a
timeout, a refused connection) is retried later (`webhooks.next_attempt_at`), and once the retry
window is over the delivery is dead.

Bounded: one attempt takes at most `DIAGNOXIX_WEBHOOK_TIMEOUT` seconds, redirects are not
followed, no proxy settings from the environment are used, the answer's body is never read.
Logs name the delivery, the endpoint's id and the status or error class: never the URL (it may
carry a token) nor the secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from standardwebhooks import Webhook

from diagnoxix import __version__
from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.timers import Deferred
from diagnoxix.delivery.webhooks import next_attempt_at
from diagnoxix.rules.webhooks import check_webhook_url
from diagnoxix.store.protocols import Store
from diagnoxix.store.timer_records import Timer
from diagnoxix.store.webhook_records import WEBHOOKS_OWNER, WebhookEndpoint

log = logging.getLogger("diagnoxix.webhooks")

# Deliveries in flight at once, over every endpoint.
MAX_CONNECTIONS = 50


class WebhookSender:
    """`start()` opens the HTTP client (on the running loop), `close()` ends it."""

    def __init__(
        self, store: Store, clock: Clock, settings: Settings, *, wall: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        # The signature's timestamp is the real time: the receiver checks it against its clock.
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None
        # Attempts' outcomes in this process (`/metrics`): delivered, retried, dead, dropped.
        self.outcomes: dict[str, int] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds),
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
            trust_env=False,
            headers={"User-Agent": f"diagnoxix-notify/{__version__} (webhooks)"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, job: Timer) -> None:
        endpoints = {e.id: e for e in await self._store.webhook_endpoints()}
        endpoint = endpoints.get(str(job.payload.get("endpoint")))
        if endpoint is None:
            # Removed by staff since: nobody to send it to.
            await self._store.cancel_timer(WEBHOOKS_OWNER, job.id)
            self._count("dropped")
            log.info("webhooks.dropped", extra={"webhook_id": job.id, "reason": "endpoint removed"})
            return
        final = True
        error: str | None
        if not endpoint.enabled:
            error = "endpoint disabled"
        elif check_webhook_url(endpoint.url, allow_http_loopback=self._settings.webhook_allow_http_loopback):
            error = "URL not allowed"
        elif "content" not in job.payload:
            error = "body gone"
        else:
            final = False
            error = await self._post(endpoint, job)
        if error is None:
            await self._store.finish_timer(job.id)
            self._count("delivered")
            log.info("webhooks.delivered", extra={"webhook_id": job.id, "endpoint": endpoint.id})
            return
        retry_for = self._settings.webhook_retry_for_seconds
        due = None if final else next_attempt_at(job, self._clock.now(), retry_for)
        await self._store.webhook_attempt_failed(job.id, due, error)
        attempts = job.attempts + 1
        details = {"webhook_id": job.id, "endpoint": endpoint.id, "error": error, "attempts": attempts}
        if due is None:
            self._count("dead")
            log.warning("webhooks.dead", extra=details)
            raise Deferred("failed")
        self._count("retried")
        log.info("webhooks.retry", extra=details)
        raise Deferred("retried")

    async def _post(self, endpoint: WebhookEndpoint, job: Timer) -> str | None:
        """None when the receiver answered 2xx, else what went wrong (a status or error class)."""
        assert self._session is not None, "start() first"
        body = str(job.payload["content"]["body"])
        moment = datetime.fromtimestamp(int(self._wall()), UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": job.id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(endpoint.secret).sign(job.id, moment, body),
        }
        try:
            async with self._session.post(
                endpoint.url, data=body.encode(), headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError as exc:
            return type(exc).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
