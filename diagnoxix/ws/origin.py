"""Origin checks for browser-initiated WebSocket handshakes (cross-site WebSocket hijacking)."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from diagnoxix.config import Settings
from diagnoxix.edge.clients import Forwarding
from diagnoxix.errors import ApiError

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def origin_allowed(origin: str | None, host: str | None, scheme: str, settings: Settings) -> bool:
    """Same origin (scheme and host), an allow-listed origin, or (in --dev) any localhost origin.

    A request without an Origin header comes from a non-browser client (a service, a script),
    which a browser-based attacker cannot forge: it is allowed and must still authenticate.
    """
    if origin is None:
        return True
    normalized = origin.strip().rstrip("/").lower()
    if normalized in {o.lower() for o in settings.allowed_origins}:
        return True
    try:
        parts = urlsplit(normalized)
    except ValueError:  # no URL at all ("http://[" is an unclosed IPv6 address): not one we allow
        return False
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return False  # includes the opaque origin "null" of sandboxed frames and file:// pages
    if host is not None and parts.netloc == host.strip().lower() and parts.scheme == scheme:
        return True
    return settings.dev and parts.hostname in _LOCAL_HOSTS


def check_origin(request: web.Request, settings: Settings, forwarding: Forwarding) -> None:
    """`forwarding` says which scheme the browser used (a trusted proxy may have ended TLS)."""
    scheme = forwarding.scheme(request)
    if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host"), scheme, settings):
        raise ApiError(
            403,
            "origin_not_allowed",
            "this Origin may not open a connection; add it to DIAGNOXIX_ALLOWED_ORIGINS",
        )
