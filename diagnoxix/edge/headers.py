"""Headers every response carries, and CORS for the portals a clinic allows.

Every response: `nosniff`. Outside the dashboard (which sets its own policy): no framing, no
referrer, and for `/v1/`, which holds patient data, `Cache-Control: no-store`.

CORS is off unless `DIAGNOXIX_ALLOWED_ORIGINS` names origins (the same ones allowed to open a
WebSocket): those may call `/v1/` with a user's token in `Authorization` and import the browser
SDK from `/static/`. No cookies are involved, so credentials are never allowed across origins.
Written here rather than with aiohttp-cors, which registers OPTIONS routes per resource and cannot
take static routes; this is a handful of headers and one preflight answer.
"""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from diagnoxix.config import Settings
from diagnoxix.errors import error_response

_EVERYWHERE = {"X-Content-Type-Options": "nosniff"}
# An API answer or a script is never a page: nothing may frame it, and it loads nothing.
_OUTSIDE_DASHBOARD = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# The Web Push service worker (static/js/diagnoxix-sw.js): a script's policy governs the worker it
# starts, which fetches a pushed notification from this origin; it may control pages from "/".
_SERVICE_WORKER = "/static/js/diagnoxix-sw.js"
_SERVICE_WORKER_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; connect-src 'self'",
    "Service-Worker-Allowed": "/",
}
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
_CORS_REQUEST_HEADERS = "Authorization, Content-Type, Idempotency-Key"
_CORS_EXPOSED = "Retry-After, Idempotent-Replayed"
# How long a browser may reuse a preflight answer.
_CORS_MAX_AGE_SECONDS = "600"


def _cors_path(path: str) -> bool:
    # The WebSocket handshake is not CORS: its Origin is checked at the upgrade (ws/origin.py).
    return (path.startswith("/v1/") and path != "/v1/ws/notifications") or path.startswith("/static/")


class EdgeHeaders:
    """Built once per app from the settings; `middleware` answers preflights, `on_prepare` adds
    the headers to every response (errors and redirects included)."""

    def __init__(self, settings: Settings) -> None:
        self._origins = frozenset(o.lower() for o in settings.allowed_origins)

    def _allowed(self, request: web.BaseRequest) -> str | None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin.rstrip("/").lower() in self._origins and _cors_path(request.path):
            return origin
        return None

    @web.middleware
    def middleware(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        # Not a coroutine, like the error middleware: no frame of ours around a long-lived socket.
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            return self._preflight(request)
        return handler(request)

    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        origin = self._allowed(request)
        if origin is None:
            return error_response(
                403,
                "origin_not_allowed",
                "this Origin may not call the API; add it to DIAGNOXIX_ALLOWED_ORIGINS",
            )
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: _CORS_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: _CORS_REQUEST_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: _CORS_MAX_AGE_SECONDS,
            },
        )

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            # A 101 carries no content these headers could protect, and a socket keeps its
            # response's headers as long as it lives: an idle patient connection stays small.
            return
        headers = response.headers
        for name, value in _EVERYWHERE.items():
            headers.setdefault(name, value)
        path = request.path
        if path == _SERVICE_WORKER:
            for name, value in _SERVICE_WORKER_HEADERS.items():
                headers.setdefault(name, value)
        if not path.startswith("/dashboard"):
            for name, value in _OUTSIDE_DASHBOARD.items():
                headers.setdefault(name, value)
        if path.startswith("/v1/"):
            headers.setdefault(hdrs.CACHE_CONTROL, "no-store")
        if _cors_path(path):
            headers.add(hdrs.VARY, "Origin")
            origin = self._allowed(request)
            if origin is not None:
                headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
                headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = _CORS_EXPOSED
