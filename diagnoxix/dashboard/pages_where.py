"""A notification's page: where it went and what each channel answered ("Where it went").

One row per channel attempt: the socket (delivered to a device, read, acknowledged for a critical
item), each push (the push service's host only: an endpoint is a secret) and each webhook delivery
of an event naming it (the endpoint's host only: a URL may carry a token), with its state, the
answer and when. Reachable from every notifications table (its seq).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from aiohttp import web

from diagnoxix.dashboard.pages_send import delivery_state
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import require_staff
from diagnoxix.delivery.presence import online_recipients
from diagnoxix.keys import PRESENCE, STORE
from diagnoxix.models import Notification, parse_timestamp
from diagnoxix.rules.corrections import is_notification_id
from diagnoxix.store.critical_records import CriticalItem
from diagnoxix.store.push_records import PushAttempt
from diagnoxix.store.timer_records import Timer
from diagnoxix.store.webhook_records import WebhookEndpoint

# A delivery's timer state as staff read it.
_WEBHOOK_STATES = {"pending": "pending", "done": "delivered", "failed": "dead", "cancelled": "dropped"}


@dataclass(frozen=True, slots=True)
class Route:
    """One way the notification went: `channel` socket, push or webhook; `to` who or which host."""

    channel: str
    to: str
    state: str
    answer: str
    at: datetime | None


def host_of(url: str) -> str:
    """Only the host (and a port): never the user, path or query, where a secret may sit."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def socket_route(note: Notification, online: bool, item: CriticalItem | None) -> Route:
    state = delivery_state(note, online)
    answer = "read" if note.read_at else ("received by a device" if note.delivered_at else "not yet")
    if item is not None and item.state == "acknowledged":
        who = f"{item.acknowledged_by}" + (" on behalf" if item.on_behalf else "")
        answer = f"acknowledged by {who} via {item.acknowledged_via}"
    elif item is not None and item.requires_ack:
        answer += "; not acknowledged"
    at = (
        item.acknowledged_at
        if item is not None and item.acknowledged_at
        else note.read_at or note.delivered_at
    )
    return Route("socket", note.user_id, state, answer, at)


def push_route(attempt: PushAttempt) -> Route:
    if attempt.status > 0:
        answer = f"HTTP {attempt.status}"
    else:
        answer = "no answer" if attempt.status == 0 else "unusable key"
    return Route("push", attempt.host, attempt.outcome, answer, attempt.at)


def webhook_route(job: Timer, endpoints: dict[str, WebhookEndpoint]) -> Route:
    endpoint = endpoints.get(str(job.payload.get("endpoint")))
    to = host_of(endpoint.url) if endpoint is not None else "a removed endpoint"
    state = _WEBHOOK_STATES.get(job.state, job.state)
    event = str(job.payload.get("event", ""))
    if job.state == "done":
        answer = f"{event}: 2xx"
    elif "last_error" in job.payload:
        answer = f"{event}: {job.payload['last_error']} ({job.attempts} attempts)"
    else:
        answer = f"{event}: not tried yet"
    last = job.payload.get("last_attempt_at")
    at = job.finished_at or (parse_timestamp(str(last)) if last else job.due_at)
    return Route("webhook", to, state, answer, at)


def routes(
    note: Notification,
    online: bool,
    item: CriticalItem | None,
    pushes: Sequence[PushAttempt],
    webhooks: Sequence[Timer],
    endpoints: Sequence[WebhookEndpoint],
) -> list[Route]:
    by_id = {e.id: e for e in endpoints}
    return [
        socket_route(note, online, item),
        *(push_route(a) for a in pushes),
        *(webhook_route(j, by_id) for j in webhooks),
    ]


async def notification_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    nid = request.match_info["notification_id"]
    store = request.config_dict[STORE]
    found = await store.get_notifications([nid]) if is_notification_id(nid) else []
    if not found:
        raise web.HTTPNotFound(reason="no such notification (or it has expired)")
    note = found[0]
    online = note.user_id in await online_recipients(request.config_dict[PRESENCE], [note])
    item = None if note.is_broadcast else await store.critical_item_of(note.id)
    pushes = (await store.push_attempts([note.id])).get(note.id, [])
    webhooks = (await store.webhook_deliveries_of([note.id])).get(note.id, [])
    endpoints = await store.webhook_endpoints() if webhooks else []
    context = {
        "note": note,
        "item": item,
        "routes": routes(note, online, item, pushes, webhooks, endpoints),
    }
    return await render(request, "notification.html", context, staff=staff)
