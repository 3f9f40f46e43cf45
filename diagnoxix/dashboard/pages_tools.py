"""The overview (live figures) and the test client (see one user's notifications live)."""

from __future__ import annotations

import logging

from aiohttp import web

from diagnoxix.auth import mint_device_token
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import checked_form, require_staff
from diagnoxix.dashboard.state import DASHBOARD
from diagnoxix.dashboard.stats import overview_figures
from diagnoxix.keys import PRESENCE, STORE, TOKENS
from diagnoxix.models import format_timestamp
from diagnoxix.rules import USER_ID_SHAPE, is_valid_user_id

log = logging.getLogger("diagnoxix.dashboard")

# The test client's connection token: long enough to watch, short enough to be useless if leaked.
TEST_CLIENT_TOKEN_TTL = 300

# The overview's figures, in display order: (data-stat name, label, display filter or None).
OVERVIEW_FIGURES = (
    ("connections", "Connections", None),
    ("users_online", "Users online", None),
    ("sent_minute", "Sent, last minute", None),
    ("sent_hour", "Sent, last hour", None),
    ("delivered_minute", "Delivered, last minute", None),
    ("delivered_hour", "Delivered, last hour", None),
    ("read_minute", "Read, last minute", None),
    ("read_hour", "Read, last hour", None),
    ("send_queue", "Send-queue depth", None),
    ("memory", "Process memory", "size"),
    ("uptime", "Uptime", "duration"),
)


async def overview(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    sampler = request.config_dict[DASHBOARD].sampler
    values = await overview_figures(sampler, request.config_dict[PRESENCE])
    context = {"figures": OVERVIEW_FIGURES, "values": values}
    return await render(request, "overview.html", context, staff=staff)


async def test_client_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    return await render(request, "test_client.html", {"user_id": "", "errors": {}}, staff=staff)


async def test_client_connect(request: web.Request) -> web.StreamResponse:
    """Mint a short-lived token for the chosen user; the page then connects as that user."""
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    user_id = form.get("user_id", "").strip()
    if not is_valid_user_id(user_id):
        errors = {"user_id": USER_ID_SHAPE}
        context = {"user_id": user_id, "errors": errors}
        return await render(request, "test_client.html", context, staff=staff, status=422)
    store = request.config_dict[STORE]
    minted = await mint_device_token(request.config_dict[TOKENS], store, user_id, TEST_CLIENT_TOKEN_TTL)
    details = {"ttl": TEST_CLIENT_TOKEN_TTL, "via": "test-client", "token_id": minted.token_id}
    store.record_audit(staff.actor, "token.mint", user_id, details)
    log.info("dashboard.test_client", extra={"username": staff.username, "user_id": user_id})
    context = {
        "user_id": user_id,
        "errors": {},
        "token": minted.token,
        "expires_at": format_timestamp(minted.expires_at),
    }
    return await render(request, "test_client.html", context, staff=staff)
