"""Keys, CSRF tokens, Origin checks and the security headers of every dashboard response."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from diagnoxix.keys import FORWARDING

# Scripts and styles only from our own static files: no inline script, no CDN. `connect-src 'self'`
# also covers the same-origin ws:/wss: live socket (CSP level 3).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, from the server secret (HKDF-SHA256).

    The secret survives restarts (kept in the database or DIAGNOXIX_SECRET_KEY), so do the
    derived keys: sessions and forms stay valid across a restart. Each purpose gets its own key,
    so a cookie key can never double as a CSRF key.
    """
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"diagnoxix-notify dashboard",
        info=purpose.encode(),
    )
    return hkdf.derive(secret.encode())


def csrf_token(key: bytes, seed: str) -> str:
    """The form token of one session: an HMAC of its id, so no other session's token matches.

    Also the keyed hash of the sign-in throttle, whose seed holds a forwarded address: with
    `surrogatepass` any text hashes (a header byte that is not UTF-8 arrives as a lone
    surrogate), and UTF-8 text hashes exactly as before.
    """
    return hmac.new(key, seed.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def csrf_matches(key: bytes, seed: str, presented: str) -> bool:
    """Constant-time, as bytes: `compare_digest` raises TypeError for a str that is not ASCII,
    and a token we made is hex, so one that is not ASCII simply does not match."""
    if not presented.isascii():
        return False
    return hmac.compare_digest(csrf_token(key, seed).encode(), presented.encode())


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def same_origin(request: web.Request) -> bool:
    """The request came from one of our own pages (Origin, else Referer, names our host).

    Browsers send Origin with every POST and every WebSocket handshake; a request naming neither
    is not from a browser form of ours and is refused.
    """
    host = (request.headers.get("Host") or "").strip().lower()
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not host or not source or source == "null":
        return False
    try:
        parts = urlsplit(source.strip().lower())
    except ValueError:
        return False  # `http://[` and the like name no origin, so not ours
    # The scheme too: http://host is another origin than https://host.
    return parts.scheme == request.config_dict[FORWARDING].scheme(request) and parts.netloc == host


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every dashboard response, pages, redirects, errors and assets alike.

    Pages may show notification content, patient ids and audit entries: none may be cached.
    Static assets are public and revalidated.
    """
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/dashboard/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")
    else:
        response.headers["Cache-Control"] = "no-store"
