"""The send form: one user or everyone, in the kinds the service knows.

Each kind goes through the service's own typed sender, so the dashboard cannot send anything a
backend could not (same validation, same wording rules: lab results never carry values). After a
successful send the browser is redirected to `?sent=<id>` (post/redirect/get: a reload never sends
twice), where the page shows the stored id and, live, whether it was delivered or is queued.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from diagnoxix.dashboard.inputs import query_id
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import Staff, checked_form, require_staff
from diagnoxix.delivery.presence import online_recipients
from diagnoxix.delivery.service import APPOINTMENT_STATUSES
from diagnoxix.json_encoding import decode_json
from diagnoxix.keys import PRESENCE, SERVICE, STORE
from diagnoxix.models import PRIORITIES, Notification
from diagnoxix.rules import FieldErrors, check_priority, check_title_message, check_type
from diagnoxix.store.protocols import StoreError

log = logging.getLogger("diagnoxix.dashboard")

KINDS = (
    ("appointment", "Appointment"),
    ("lab_result", "Lab result ready"),
    ("ai_analysis", "AI analysis ready"),
    ("custom", "Custom"),
)
_KIND_NAMES = {name for name, _ in KINDS}


def delivery_state(note: Notification, online: bool) -> str:
    """What staff need to know: did it reach the patient, or will it wait for them?"""
    return "read" if note.read_at is not None else note.delivery_state(online)


def _parse_data(raw: str, errors: FieldErrors) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = decode_json(raw)
    except (ValueError, RecursionError):
        errors.add("data", 'must be valid JSON, each key once, e.g. {"appointment_id": "a-1"}')
        return None
    if not isinstance(value, dict):
        errors.add("data", "must be a JSON object ({...})")
        return None
    return value


async def _send(request: web.Request, form: MultiDictProxy[str], sender: str) -> Notification:
    """Call the service for the chosen kind; raises FieldErrors keyed by form field name. A
    critical one to a user opens a critical item (docs/critical.md) sent by `sender`."""
    service = request.config_dict[SERVICE]
    errors = FieldErrors()
    target = form.get("target", "user")
    kind = form.get("kind", "custom")
    if target not in {"user", "broadcast"}:
        errors.add("target", "choose one user or everyone")
    if kind not in _KIND_NAMES:
        errors.add("kind", "choose a kind from the list")
    elif target == "broadcast" and kind != "custom":
        errors.add("kind", "a broadcast is a custom notification: choose Custom")
    user_id = form.get("user_id", "").strip()
    if target == "user" and not user_id:
        errors.add("user_id", "is required when sending to one user")
    data = _parse_data(form.get("data", ""), errors)
    priority = check_priority(form.get("priority", "normal"), "priority", errors)
    title, message = form.get("title", ""), form.get("message", "")
    if kind == "custom":
        # Checked here too so every problem of the form shows at once, not one round at a time.
        check_title_message({"title": title, "message": message}, "", errors)
        if form.get("type", "").strip():
            check_type(form.get("type", "").strip(), "type", errors)
    if errors:
        raise errors
    if target == "broadcast":
        return await service.broadcast_system_notification(
            title,
            message,
            data,
            type=form.get("type", "").strip() or "system",
            priority=priority,
        )
    if kind == "appointment":
        status = form.get("status", "")
        return await service.send_appointment_notification(
            user_id,
            form.get("appointment_id", "").strip(),
            status,  # type: ignore[arg-type]  # checked by the service
            message,
            sender=sender,
        )
    if kind == "lab_result":
        return await service.send_lab_result_notification(
            user_id, form.get("test_name", "").strip(), abnormal=form.get("abnormal") == "on", sender=sender
        )
    if kind == "ai_analysis":
        return await service.send_ai_analysis_notification(
            user_id, form.get("analysis_type", "").strip(), form.get("analysis_id", "").strip(), sender=sender
        )
    return await service.create_and_send_notification(
        user_id,
        form.get("type", "").strip() or "notification",
        title,
        message,
        data,
        priority=priority,
        sender=sender,
    )


def _context(form: MultiDictProxy[str] | dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "form": form,
        "errors": errors,
        "kinds": KINDS,
        "statuses": APPOINTMENT_STATUSES,
        "priorities": PRIORITIES,
    }


async def send_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    context = _context({"target": "user", "kind": "custom", "priority": "normal"}, {})
    sent_id = query_id(request, "sent")
    if sent_id:
        found = await request.config_dict[STORE].get_notifications([sent_id])
        if found:
            note = found[0]
            online = note.user_id in await online_recipients(request.config_dict[PRESENCE], [note])
            context["sent"] = note
            context["sent_state"] = delivery_state(note, online)
            # A critical one opened an item: it stays open until a person acknowledges it.
            context["sent_item"] = await request.config_dict[STORE].critical_item_of(note.id)
    return await render(request, "send.html", context, staff=staff)


async def send(request: web.Request) -> web.StreamResponse:
    staff: Staff = await require_staff(request)
    form = await checked_form(request, staff)
    try:
        note = await _send(request, form, staff.actor)
    except FieldErrors as exc:
        context = _context(form, dict(exc.details))
        return await render(request, "send.html", context, staff=staff, status=422)
    except StoreError:
        context = _context(form, {"form": "the notification could not be stored; try again shortly"})
        return await render(request, "send.html", context, staff=staff, status=503)
    store = request.config_dict[STORE]
    if note.is_broadcast:
        connections, _ = await request.config_dict[PRESENCE].totals()  # in every process
        store.record_audit(
            staff.actor, "notification.broadcast", None, {"id": note.id, "connections": connections}
        )
    else:
        store.record_audit(staff.actor, "notification.send", note.user_id, {"id": note.id, "type": note.type})
    log.info("dashboard.send", extra={"username": staff.username, "id": note.id, "type": note.type})
    raise web.HTTPSeeOther(f"/dashboard/send?sent={note.id}")
