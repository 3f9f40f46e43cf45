"""Rendering pages: the context every template gets, display filters, HTML error pages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from diagnoxix.dashboard.sessions import Staff, anonymous_csrf, current_staff
from diagnoxix.errors import Unavailable, client_fault
from diagnoxix.models import parse_timestamp

log = logging.getLogger("diagnoxix.dashboard")

_RETRY = {"Retry-After": "5"}

# The navigation, in order: (path, label). Templates mark the current one with aria-current.
NAV = (
    ("/dashboard/", "Overview"),
    ("/dashboard/send", "Send"),
    ("/dashboard/notifications", "Notifications"),
    ("/dashboard/critical", "Critical"),
    ("/dashboard/groups", "Groups"),
    ("/dashboard/users", "Users online"),
    ("/dashboard/keys", "API keys"),
    ("/dashboard/webhooks", "Webhooks"),
    ("/dashboard/templates", "Templates"),
    ("/dashboard/audit", "Audit log"),
    ("/dashboard/test-client", "Test client"),
)


async def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    *,
    staff: Staff | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    csrf = staff.csrf if staff is not None else await anonymous_csrf(request)
    full = {"staff": staff, "csrf": csrf, "nav": NAV, "path": request.path, **context}
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Dashboard errors are pages for people, not the API's JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status, reason = exc.status, exc.reason
    except Unavailable as exc:
        # The database is restarting or gone: the store logged the outage once; nothing to fix here.
        log.info("dashboard.unavailable", extra={"path": request.path, "error": type(exc).__name__})
        context = {"status": 503, "reason": "The database is not answering; try again in a moment"}
        return await render(request, "error.html", context, staff=None, status=503, headers=_RETRY)
    except Exception as exc:
        if (fault := client_fault(exc)) is not None:
            # What a browser's bytes made aiohttp raise (a static name too long to be a file).
            log.info("dashboard.bad_request", extra={"path": request.path, "problem": type(exc).__name__})
            status, reason = fault.status, fault.message
        else:
            # The traceback goes to the log (ids only, never form content); the page says no more.
            log.exception("dashboard.unhandled", extra={"path": request.path, "method": request.method})
            status, reason = 500, "Something went wrong; the error was logged"
    staff = await current_staff(request)
    context = {"status": status, "reason": reason}
    return await render(request, "error.html", context, staff=staff, status=status)


def when(value: datetime | str | None) -> str:
    """A moment as staff read it: `2024-01-15 10:30:05 UTC`."""
    if value is None:
        return "—"
    moment = parse_timestamp(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def since_epoch(value: float) -> str:
    return when(datetime.fromtimestamp(value, UTC))


def size(value: int) -> str:
    return f"{value / (1024 * 1024):.1f} MiB"


def duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s"


FILTERS: dict[str, Callable[..., str]] = {
    "when": when,
    "since_epoch": since_epoch,
    "size": size,
    "duration": duration,
}
