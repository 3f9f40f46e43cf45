"""The Critical page: open critical items with live timers, who has been told by which channel,
acknowledge on behalf (a reason is required), each item's full timeline; and the Groups page,
where staff manage groups, their members and who is on duty.

An acknowledgement on behalf is the same as `POST /v1/notifications/{id}/acknowledgement` with an
API key: it closes the item for every recipient (each of their open pages shows it closed) and
cancels the rest of its escalation; the member of staff and the reason are in the item's timeline
and the audit log. Every form is CSRF-checked.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import checked_form, require_staff
from diagnoxix.keys import CRITICAL, STORE
from diagnoxix.rules import FieldErrors, is_valid_user_id
from diagnoxix.rules.corrections import is_notification_id
from diagnoxix.rules.critical import is_group_name, parse_on_behalf
from diagnoxix.store.critical_records import Acknowledgement, CriticalEvent

log = logging.getLogger("diagnoxix.dashboard")

# Open items listed: a screen's worth for a clinic; more would mean something else is wrong.
OPEN_LISTED = 100
# Channels that reached someone (or tried to), as the Told column shows them.
_TOLD = {"sent", "escalated", "delivered", "channel_not_configured", "channel_failed"}


def told(events: list[CriticalEvent]) -> list[dict[str, Any]]:
    """Per recipient and channel: the latest of sent, escalated, delivered (or a channel's failure)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e.event in _TOLD:
            who = e.user_id or "(step recipients)"
            seen[who, e.channel or ""] = {"user_id": who, "channel": e.channel, "event": e.event, "at": e.at}
    return list(seen.values())


async def critical_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    store = request.config_dict[STORE]
    items = await store.critical_items(open_only=True, limit=OPEN_LISTED)
    rows = [(item, told(await store.critical_timeline(item.id))) for item in items]
    context = {"rows": rows, "acknowledged": request.query.get("acknowledged")}
    return await render(request, "critical.html", context, staff=staff)


def _item_id(request: web.Request) -> str:
    item_id = request.match_info["critical_id"]
    if not is_notification_id(item_id):
        raise web.HTTPNotFound(reason="no critical item with that id")
    return item_id


async def critical_item_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    store = request.config_dict[STORE]
    item = await store.critical_item(_item_id(request))
    if item is None:
        raise web.HTTPNotFound(reason="no critical item with that id")
    context = {
        "item": item,
        "copies": await store.critical_copies(item.id),
        "timeline": await store.critical_timeline(item.id),
    }
    return await render(request, "critical_item.html", context, staff=staff)


async def acknowledge_on_behalf(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    store = request.config_dict[STORE]
    item = await store.critical_item(_item_id(request))
    if item is None:
        raise web.HTTPNotFound(reason="no critical item with that id")
    errors = FieldErrors()
    reason = parse_on_behalf({"reason": form.get("reason", "")}, errors)
    if errors:
        raise web.HTTPBadRequest(reason="a reason is required (up to 500 characters)")
    if not item.requires_ack:
        raise web.HTTPConflict(reason="this group send needs no acknowledgement")
    ack = Acknowledgement(staff.actor, "dashboard", None, on_behalf=True, reason=reason)
    result = await request.config_dict[CRITICAL].acknowledge(item, ack)
    if result.outcome == "done":
        store.record_audit(
            staff.actor, "critical.acknowledge_on_behalf", None, {"critical_id": item.id, "reason": reason}
        )
    log.info("dashboard.acknowledge", extra={"username": staff.username, "item": item.id})
    raise web.HTTPSeeOther(f"/dashboard/critical?{urlencode({'acknowledged': item.id})}")


# -- groups ----------------------------------------------------------------------------------


async def groups_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    store = request.config_dict[STORE]
    groups = [(g, await store.group_members(g.name) or []) for g in await store.list_groups()]
    return await render(
        request, "groups.html", {"groups": groups, "problem": request.query.get("problem")}, staff=staff
    )


def _back(problem: str | None = None) -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/dashboard/groups" + (f"?{urlencode({'problem': problem})}" if problem else ""))


async def create_group(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    name = form.get("group", "").strip()
    if not is_group_name(name):
        raise _back("a group name is 1-64 letters, digits and . _ : @ -")
    if await request.config_dict[STORE].put_group(name):
        request.config_dict[STORE].record_audit(staff.actor, "group.create", name)
    raise _back()


async def set_member(request: web.Request) -> web.StreamResponse:
    """Add a member (on duty unless unticked), or switch one on or off duty."""
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    name = request.match_info["group"]
    user_id = form.get("user_id", "").strip()
    if not is_group_name(name) or not is_valid_user_id(user_id):
        raise _back("a member is a user id (letters, digits and . _ : @ -)")
    on_duty = form.get("on_duty") == "on"
    store = request.config_dict[STORE]
    if not await store.set_group_member(name, user_id, on_duty):
        raise web.HTTPNotFound(reason="no such group")
    store.record_audit(staff.actor, "group.member", user_id, {"group": name, "on_duty": on_duty})
    raise web.HTTPSeeOther(f"/dashboard/groups#g-{quote(name)}")


async def remove_member(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    name, user_id = request.match_info["group"], form.get("user_id", "")
    store = request.config_dict[STORE]
    if is_group_name(name) and is_valid_user_id(user_id) and await store.remove_group_member(name, user_id):
        store.record_audit(staff.actor, "group.member_removed", user_id, {"group": name})
    raise web.HTTPSeeOther(f"/dashboard/groups#g-{quote(name)}")


def setup_critical_pages(router: web.UrlDispatcher) -> None:
    router.add_get("/critical", critical_page)
    router.add_get("/critical/{critical_id}", critical_item_page)
    router.add_post("/critical/{critical_id}/acknowledge", acknowledge_on_behalf)
    router.add_get("/groups", groups_page)
    router.add_post("/groups", create_group)
    router.add_post("/groups/{group}/members", set_member)
    router.add_post("/groups/{group}/members/remove", remove_member)
