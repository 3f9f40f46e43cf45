"""Who is connected now, one user's page (with their devices), and disconnecting a user (admins)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from diagnoxix.dashboard.pages_records import PAGE_SIZE, cursor
from diagnoxix.dashboard.pages_send import delivery_state
from diagnoxix.dashboard.push_view import push_context
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import checked_form, require_admin, require_staff
from diagnoxix.delivery.connection import CLOSE_POLICY_VIOLATION
from diagnoxix.keys import BROKER, HUB, PRESENCE, SETTINGS, STORE
from diagnoxix.rules import MAX_DEVICES_LISTED, is_valid_user_id, next_cursor
from diagnoxix.rules.preferences import to_api

log = logging.getLogger("diagnoxix.dashboard")


@dataclass(frozen=True, slots=True)
class Presence:
    user_id: str
    connections: int
    since: float  # the oldest open connection's start (epoch seconds)


async def users_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    wanted = request.query.get("id", "").strip()
    if wanted and is_valid_user_id(wanted):
        raise web.HTTPSeeOther(f"/dashboard/users/{wanted}")
    # Users with open connections in every process, longest-connected first.
    rows = await request.config_dict[PRESENCE].online_users()
    online = [Presence(user, count, since) for user, count, since in rows]
    return await render(request, "users.html", {"online": online}, staff=staff)


def user_id_of(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if not is_valid_user_id(user_id):
        raise web.HTTPNotFound(reason="no such user id")
    return user_id


async def user_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    user_id = user_id_of(request)
    store, hub = request.config_dict[STORE], request.config_dict[HUB]
    before = cursor(request.query.get("before"))
    history = await store.history(user_id, before_seq=before, limit=PAGE_SIZE)
    # This process's connections in detail; the count is every process's (`Presence`).
    connections = sorted(
        (c for c in hub.iter_connections() if c.user_id == user_id), key=lambda c: c.connected_at
    )
    everywhere, _ = await request.config_dict[PRESENCE].user(user_id)
    count = max(everywhere, len(connections))
    online = count > 0
    prefs = await store.get_preferences(user_id)
    critical = request.config_dict[SETTINGS].critical_categories
    context = {
        "user_id": user_id,
        "history": [(note, delivery_state(note, online)) for note in history],
        "unread": await store.unread_count(user_id),
        "connections": connections,
        "connection_count": count,
        "elsewhere": count - len(connections),
        "devices": await store.list_devices(user_id, limit=MAX_DEVICES_LISTED),
        "preferences": None if prefs is None else to_api(prefs, critical),
        "preferences_critical": critical,
        "next_before": next_cursor(history, PAGE_SIZE),
        "first_page": before is None,
        "disconnected": request.query.get("disconnected"),
        "revoked": request.query.get("revoked"),
        "retracted": request.query.get("retracted"),
        "unsubscribed": request.query.get("unsubscribed"),
    }
    context |= await push_context(store, user_id, history)
    return await render(request, "user.html", context, staff=staff)


async def disconnect_user(request: web.Request) -> web.StreamResponse:
    """Close every connection of the user (1008). Their client may reconnect with the same token;
    to keep it out, revoke the user's devices (`pages_devices`)."""
    staff = await require_admin(request)
    await checked_form(request, staff)
    user_id = user_id_of(request)
    # Counted in every process, and closed through the broker in every process.
    closing, _ = await request.config_dict[PRESENCE].user(user_id)
    request.config_dict[BROKER].disconnect(user_id, CLOSE_POLICY_VIOLATION, "disconnected by clinic staff")
    request.config_dict[STORE].record_audit(staff.actor, "user.disconnect", user_id, {"connections": closing})
    log.info("dashboard.disconnect", extra={"username": staff.username, "user_id": user_id})
    raise web.HTTPSeeOther(f"/dashboard/users/{user_id}?disconnected={closing}")
