"""Webhooks (admins): endpoints (create: the secret is shown once; enable, disable, remove) and
the dead letters, each with a button that sends it again. Every form carries the CSRF token."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from diagnoxix.dashboard.inputs import path_id
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import Staff, checked_form, require_admin
from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.keys import SCHEDULER, SETTINGS, STORE
from diagnoxix.rules.webhooks import (
    EVENT_TYPES,
    MAX_DESCRIPTION_CHARS,
    check_webhook_url,
    is_event_type,
    shown_url,
)

log = logging.getLogger("diagnoxix.dashboard")

# Dead letters listed on the page, the most recently dead first.
DEAD_LETTERS_SHOWN = 100


async def _page(request: web.Request, staff: Staff, extra: dict[str, Any], status: int = 200) -> web.Response:
    store = request.config_dict[STORE]
    endpoints = await store.webhook_endpoints()
    context = {
        "endpoints": [(e, shown_url(e.url)) for e in endpoints],
        "names": {e.id: e.description or shown_url(e.url) for e in endpoints},
        "dead": await store.dead_webhooks(limit=DEAD_LETTERS_SHOWN),
        "dead_count": await store.count_dead_webhooks(),
        "event_types": EVENT_TYPES,
        "errors": {},
        "form": {"url": "", "description": "", "events": list(EVENT_TYPES)},
        "notice": request.query.get("done", ""),
        **extra,
    }
    return await render(request, "webhooks.html", context, staff=staff, status=status)


async def webhooks_page(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    return await _page(request, staff, {})


async def create_endpoint(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    form = await checked_form(request, staff)
    url = form.get("url", "").strip()
    description = form.get("description", "").strip()
    events = [e for e in form.getall("events", []) if e]
    errors: dict[str, str] = {}
    allow_http = request.config_dict[SETTINGS].webhook_allow_http_loopback
    if (why := check_webhook_url(url, allow_http_loopback=allow_http)) is not None:
        errors["url"] = why
    if len(description) > MAX_DESCRIPTION_CHARS:
        errors["description"] = f"at most {MAX_DESCRIPTION_CHARS} characters"
    if not events or not all(is_event_type(e) for e in events):
        errors["events"] = "choose at least one event type"
    if errors:
        shown = {"url": url, "description": description, "events": events}
        return await _page(request, staff, {"errors": errors, "form": shown}, status=422)
    store = request.config_dict[STORE]
    endpoint = await store.create_webhook_endpoint(
        url, new_webhook_secret(), events, description, staff.actor
    )
    store.record_audit(staff.actor, "webhook.endpoint_create", endpoint.id, {"events": events})
    log.info("dashboard.webhook_endpoint_create", extra={"username": staff.username, "endpoint": endpoint.id})
    # Rendered in the POST's own response (never redirected to): the secret is shown this once.
    return await _page(request, staff, {"created": endpoint}, status=201)


async def _endpoint_action(request: web.Request, action: str) -> web.StreamResponse:
    staff = await require_admin(request)
    await checked_form(request, staff)
    endpoint_id = path_id(request, "endpoint_id", "no webhook endpoint with that id")
    store = request.config_dict[STORE]
    if action == "delete":
        found = await store.delete_webhook_endpoint(endpoint_id)
    else:
        found = await store.set_webhook_endpoint_enabled(endpoint_id, action == "enable")
    if not found:
        raise web.HTTPNotFound(reason="no webhook endpoint with that id")
    store.record_audit(staff.actor, f"webhook.endpoint_{action}", endpoint_id)
    log.info(
        f"dashboard.webhook_endpoint_{action}", extra={"username": staff.username, "endpoint": endpoint_id}
    )
    raise web.HTTPSeeOther(f"/dashboard/webhooks?done={action}")


async def enable_endpoint(request: web.Request) -> web.StreamResponse:
    return await _endpoint_action(request, "enable")


async def disable_endpoint(request: web.Request) -> web.StreamResponse:
    return await _endpoint_action(request, "disable")


async def delete_endpoint(request: web.Request) -> web.StreamResponse:
    return await _endpoint_action(request, "delete")


async def retry_dead_letter(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    await checked_form(request, staff)
    webhook_id = path_id(request, "webhook_id", "no dead letter with that id that can be sent again")
    store = request.config_dict[STORE]
    if not await store.revive_dead_webhook(webhook_id, staff.actor):
        raise web.HTTPNotFound(reason="no dead letter with that id that can be sent again")
    request.config_dict[SCHEDULER].wake()
    store.record_audit(staff.actor, "webhook.retry", webhook_id)
    log.info("dashboard.webhook_retry", extra={"username": staff.username, "webhook_id": webhook_id})
    raise web.HTTPSeeOther("/dashboard/webhooks?done=retry")
