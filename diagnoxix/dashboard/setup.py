"""Mount the dashboard: a sub-application under `/dashboard/` with its own middlewares.

Being a sub-application keeps the dashboard's sessions, HTML error pages and security headers off
the JSON API and the patients' WebSocket entirely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator

import aiohttp_jinja2
import aiohttp_session
import jinja2
from aiohttp import web

from diagnoxix.auth import generate_secret
from diagnoxix.config import REPO_ROOT, run_command
from diagnoxix.dashboard import (
    live,
    pages_auth,
    pages_corrections,
    pages_critical,
    pages_devices,
    pages_keys,
    pages_push,
    pages_records,
    pages_send,
    pages_templates,
    pages_tools,
    pages_users,
    pages_webhooks,
    pages_where,
)
from diagnoxix.dashboard.accounts import Passwords
from diagnoxix.dashboard.render import FILTERS, html_errors
from diagnoxix.dashboard.security import add_security_headers, derive_key
from diagnoxix.dashboard.sessions import DashboardCookieStorage, session_middleware
from diagnoxix.dashboard.state import DASHBOARD, DashboardState
from diagnoxix.dashboard.stats import StatsSampler
from diagnoxix.keys import HUB, SETTINGS, STARTED_AT, STORE

log = logging.getLogger("diagnoxix.dashboard")

TEMPLATES_DIR = REPO_ROOT / "templates"
STATIC_DIR = REPO_ROOT / "static"


async def _dashboard_context(app: web.Application) -> AsyncIterator[None]:
    """Keys from the server secret, the stats sampler; after the store and hub exist."""
    settings, store = app[SETTINGS], app[STORE]
    secret = settings.secret_key or await store.get_or_create_meta("secret_key", generate_secret)
    storage = DashboardCookieStorage(derive_key(secret, "dashboard session cookie v1"))
    state = DashboardState(
        csrf_key=derive_key(secret, "dashboard csrf v1"),
        session_middleware=aiohttp_session.session_middleware(storage),
        passwords=Passwords(),
        sampler=StatsSampler(store, app[HUB], app[STARTED_AT]),
    )
    await state.sampler.sample()
    app[DASHBOARD] = state
    app[HUB].add_presence_listener(state.presence.record)
    if await store.count_staff_accounts() == 0:
        # Printed beside the "serving on" line (stdout); stderr carries only JSON log lines.
        hint = f"{run_command()} admin create USERNAME --db {settings.db_path}"
        log.warning("dashboard.no_staff_account", extra={"advice": hint})
        print(
            f"No staff account yet: create one with\n    {hint}\nthen sign in at /dashboard/",
            flush=True,
        )
    sampler = asyncio.create_task(state.sampler.run(), name="diagnoxix-dashboard-sampler")
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


async def _close_live_sockets(app: web.Application) -> None:
    if DASHBOARD in app:
        app[DASHBOARD].live.end_all()


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard/")


def setup_dashboard(app: web.Application) -> None:
    """Call after the store and delivery contexts are registered (they must start first)."""
    # aiohttp-session 2.12.1 (the newest) keeps its session under plain string keys on the
    # request, which aiohttp 3.14 flags once per call site. Harmless; silenced for that one
    # module only, so the warning neither pollutes the JSON log nor hides our own key mistakes.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module="aiohttp_session")
    dashboard = web.Application(middlewares=[session_middleware, html_errors])
    aiohttp_jinja2.setup(
        dashboard,
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        # Every value is escaped: notification text is whatever a backend sent.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=FILTERS,
        default_helpers=False,
    )
    dashboard.on_response_prepare.append(add_security_headers)
    router = dashboard.router
    router.add_get("/", pages_tools.overview)
    router.add_get("/login", pages_auth.login_page)
    router.add_post("/login", pages_auth.login)
    router.add_post("/logout", pages_auth.logout)
    router.add_get("/live", live.live_socket)
    router.add_get("/send", pages_send.send_page)
    router.add_post("/send", pages_send.send)
    router.add_get("/notifications", pages_records.notifications_page)
    router.add_post("/notifications/{notification_id}/retract", pages_corrections.retract_notification)
    router.add_get("/notifications/{notification_id}", pages_where.notification_page)
    router.add_get("/audit", pages_records.audit_page)
    router.add_get("/templates", pages_templates.templates_page)
    router.add_post("/templates", pages_templates.save_template)
    router.add_post("/templates/remove", pages_templates.remove_template)
    router.add_get("/users", pages_users.users_page)
    router.add_get("/users/{user_id}", pages_users.user_page)
    router.add_post("/users/{user_id}/disconnect", pages_users.disconnect_user)
    router.add_post("/users/{user_id}/devices/revoke", pages_devices.revoke_all_devices)
    router.add_post("/users/{user_id}/devices/{token_id}/revoke", pages_devices.revoke_device)
    router.add_post(
        "/users/{user_id}/push-subscriptions/{subscription_id}/delete", pages_push.delete_subscription
    )
    router.add_get("/keys", pages_keys.keys_page)
    router.add_post("/keys", pages_keys.create_key)
    router.add_post("/keys/{key_id}/revoke", pages_keys.revoke_key)
    router.add_get("/webhooks", pages_webhooks.webhooks_page)
    router.add_post("/webhooks", pages_webhooks.create_endpoint)
    router.add_post("/webhooks/{endpoint_id}/enable", pages_webhooks.enable_endpoint)
    router.add_post("/webhooks/{endpoint_id}/disable", pages_webhooks.disable_endpoint)
    router.add_post("/webhooks/{endpoint_id}/delete", pages_webhooks.delete_endpoint)
    router.add_post("/webhooks/dead/{webhook_id}/retry", pages_webhooks.retry_dead_letter)
    pages_critical.setup_critical_pages(router)
    router.add_get("/test-client", pages_tools.test_client_page)
    router.add_post("/test-client", pages_tools.test_client_connect)
    router.add_static("/static/", STATIC_DIR)
    # Before the sub-app, whose prefix would take `/dashboard` too: its 404 page, outside the
    # cookie's path, would start a new session whose cookie replaces the signed-in one.
    app.router.add_get("/dashboard", _to_dashboard)
    app.add_subapp("/dashboard/", dashboard)
    app.router.add_get("/", _to_dashboard)
    app.cleanup_ctx.append(_dashboard_context)
    app.on_shutdown.insert(0, _close_live_sockets)
