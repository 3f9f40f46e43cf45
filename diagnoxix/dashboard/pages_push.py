"""Deleting a user's push subscription from the user's page (admins); what the page shows of
Web Push is gathered by `push_view`."""

from __future__ import annotations

import logging

from aiohttp import web

from diagnoxix.dashboard.pages_users import user_id_of
from diagnoxix.dashboard.sessions import checked_form, require_admin
from diagnoxix.keys import STORE
from diagnoxix.rules.push import is_subscription_id

log = logging.getLogger("diagnoxix.dashboard")


async def delete_subscription(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    await checked_form(request, staff)
    user_id = user_id_of(request)
    subscription_id = request.match_info["subscription_id"]
    store = request.config_dict[STORE]
    if not is_subscription_id(subscription_id) or not await store.delete_push_subscription(
        user_id, subscription_id
    ):
        raise web.HTTPNotFound(reason="this user has no push subscription with that id")
    store.record_audit(staff.actor, "push.unsubscribed", user_id, {"subscription_id": subscription_id})
    log.info("dashboard.push_unsubscribe", extra={"username": staff.username, "user_id": user_id})
    raise web.HTTPSeeOther(f"/dashboard/users/{user_id}?unsubscribed=1")
