"""Retracting a notification from the dashboard: the button (with a reason) on the notification
lists (the Notifications page and a user's page).

The same retraction as `POST /v1/notifications/{id}/retract` (`NotificationService.retract`):
gone from history, unread counts and every device of the user (or everyone, for a broadcast),
audited with the member of staff and the reason, never the words. CSRF-checked like every form.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web

from diagnoxix.dashboard.sessions import checked_form, require_staff
from diagnoxix.keys import SERVICE, STORE
from diagnoxix.models import BROADCAST_RECIPIENT
from diagnoxix.rules import FieldErrors
from diagnoxix.rules.corrections import is_notification_id, parse_retraction

log = logging.getLogger("diagnoxix.dashboard")


async def retract_notification(request: web.Request) -> web.StreamResponse:
    """Staff and admins: whoever may send may take back what was sent in error."""
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    notification_id = request.match_info["notification_id"]
    if not is_notification_id(notification_id):
        raise web.HTTPNotFound(reason="no notification with that id")
    errors = FieldErrors()
    reason = parse_retraction({"reason": form.get("reason", "")}, errors)
    if errors:
        raise web.HTTPBadRequest(reason="a reason is required (up to 500 characters)")
    store = request.config_dict[STORE]
    result = await request.config_dict[SERVICE].retract(store, notification_id)
    fix = result.correction
    if fix is None:
        raise web.HTTPNotFound(reason="no notification with that id (or it has expired)")
    details = {
        "id": fix.notification_id,
        "seq": fix.seq,
        "reason": reason,
        "changed": result.outcome == "done",
    }
    store.record_audit(staff.actor, "notification.retract", fix.user_id, details)
    log.info("dashboard.retract", extra={"username": staff.username, "id": fix.notification_id})
    query = urlencode({"retracted": fix.notification_id})
    if form.get("back") == "user" and fix.user_id != BROADCAST_RECIPIENT:
        raise web.HTTPSeeOther(f"/dashboard/users/{fix.user_id}?{query}")
    raise web.HTTPSeeOther(f"/dashboard/notifications?{query}")
