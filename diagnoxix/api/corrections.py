"""Corrections over HTTP: retract a notification sent in error, or give it new words.

`POST /v1/notifications/{id}/retract {"reason"}` and `PATCH /v1/notifications/{id} {"title"?,
"message"?, "reason"}`, with an API key (a service may correct any notification, as it may send to
anyone). Durable before they are answered; delivered to the user's v1 connections as `retracted`
and `updated` frames (`NotificationService.retract`, `.update`); audited with the reason, never the
words. Retracting twice is answered like the first time; updating a retracted one is a 409.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from diagnoxix.api.common import invalid, read_json_object, require_api_key, store_errors_as_503
from diagnoxix.errors import ApiError
from diagnoxix.keys import SERVICE, STORE
from diagnoxix.models import format_timestamp
from diagnoxix.rules import FieldErrors
from diagnoxix.rules.corrections import is_notification_id, parse_retraction, parse_update
from diagnoxix.store.protocols import Correction, CorrectionResult

log = logging.getLogger("diagnoxix.api")


def _notification_id(request: web.Request) -> str:
    notification_id = request.match_info["notification_id"]
    if not is_notification_id(notification_id):
        raise ApiError(400, "invalid_notification_id", "the path must name a notification id")
    return notification_id


def _not_found() -> ApiError:
    return ApiError(404, "notification_not_found", "no notification with that id (or it has expired)")


def correction_body(fix: Correction, *, changed: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": fix.notification_id,
        "user_id": fix.user_id,
        "correction": fix.kind,
        "seq": fix.seq,
        "corrected_at": format_timestamp(fix.at),
        "changed": changed,
    }
    if fix.kind == "updated":
        body["title"], body["message"] = fix.title, fix.message
    return body


def audit_correction(request: web.Request, actor: str, result: CorrectionResult, reason: str) -> None:
    """Who, when (the entry's time), which notification, why; never its words."""
    fix = result.correction
    assert fix is not None
    action = "notification.retract" if fix.kind == "retracted" else "notification.update"
    details = {
        "id": fix.notification_id,
        "seq": fix.seq,
        "reason": reason,
        "changed": result.outcome == "done",
    }
    request.app[STORE].record_audit(actor, action, fix.user_id, details)


async def retract(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    notification_id = _notification_id(request)
    errors = FieldErrors()
    reason = parse_retraction(await read_json_object(request), errors)
    if errors:
        raise invalid(errors)
    result = await request.app[SERVICE].retract(request.app[STORE], notification_id)
    if result.correction is None:
        raise _not_found()
    audit_correction(request, f"apikey:{api_key.id}", result, reason)
    log.info(
        "api.retract", extra={"api_key": api_key.id, "id": notification_id, "seq": result.correction.seq}
    )
    return web.json_response(correction_body(result.correction, changed=result.outcome == "done"))


async def update(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    notification_id = _notification_id(request)
    errors = FieldErrors()
    change = parse_update(await read_json_object(request), errors)
    if errors:
        raise invalid(errors)
    result = await request.app[SERVICE].update(
        request.app[STORE], notification_id, title=change.title, message=change.message
    )
    if result.correction is None:
        raise _not_found()
    if result.outcome == "already":
        raise ApiError(409, "notification_retracted", "this notification was retracted; it cannot be updated")
    audit_correction(request, f"apikey:{api_key.id}", result, change.reason)
    log.info("api.update", extra={"api_key": api_key.id, "id": notification_id, "seq": result.correction.seq})
    return web.json_response(correction_body(result.correction, changed=True))


def setup_correction_routes(app: web.Application) -> None:
    app.router.add_post("/v1/notifications/{notification_id}/retract", store_errors_as_503(retract))
    app.router.add_patch("/v1/notifications/{notification_id}", store_errors_as_503(update))
