"""What happened: recent notifications (filtered, paginated) and the audit log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from diagnoxix.dashboard.pages_send import delivery_state
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import require_staff
from diagnoxix.delivery.presence import online_recipients
from diagnoxix.keys import PRESENCE, STORE
from diagnoxix.rules import CURSOR_SEQ, is_type_name, is_valid_user_id, next_cursor
from diagnoxix.store.protocols import NOTIFICATION_STATUSES

# Rows per page: one screen on a tablet, one cheap indexed query.
PAGE_SIZE = 50


def cursor(raw: str | None) -> int | None:
    """A `before` cursor from the query string; anything odd means the first page."""
    return CURSOR_SEQ.parse(raw) if raw is not None else None


async def notifications_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    query = request.query
    user_id = query.get("user", "").strip()
    kind = query.get("type", "").strip()
    status = query.get("status", "")
    problems: dict[str, str] = {}
    if user_id and not is_valid_user_id(user_id):
        problems["user"] = "not a valid user id"
    if kind and not is_type_name(kind):
        problems["type"] = "not a valid type"
    if status and status not in NOTIFICATION_STATUSES:
        problems["status"] = "not a known status"
    notes = []
    if not problems:
        notes = await request.config_dict[STORE].list_notifications(
            user_id=user_id or None,
            type=kind or None,
            status=status or None,
            before_seq=cursor(query.get("before")),
            limit=PAGE_SIZE,
        )
    online = await online_recipients(request.config_dict[PRESENCE], notes)  # one question, any process
    rows = [(note, delivery_state(note, note.user_id in online)) for note in notes]
    filters = {"user": user_id, "type": kind, "status": status}
    filter_query = {k: v for k, v in filters.items() if v}
    next_query: dict[str, Any] | None = None
    if (before := next_cursor(notes, PAGE_SIZE)) is not None:
        next_query = {**filter_query, "before": before}
    context = {
        "rows": rows,
        "filters": filters,
        "problems": problems,
        "statuses": NOTIFICATION_STATUSES,
        "filter_query": filter_query,
        "next_query": next_query,
        "first_page": cursor(query.get("before")) is None,
        "retracted": query.get("retracted"),
    }
    return await render(request, "notifications.html", context, staff=staff)


async def audit_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    before = cursor(request.query.get("before"))
    entries = await request.config_dict[STORE].audit_page(before_id=before, limit=PAGE_SIZE)
    next_before = entries[-1]["id"] if len(entries) == PAGE_SIZE else None
    context = {"entries": entries, "next_before": next_before, "first_page": before is None}
    return await render(request, "audit.html", context, staff=staff)
