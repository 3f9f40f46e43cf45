"""The rules of Web Push input: a browser's push subscription (RFC 8030 endpoint, RFC 8291 keys),
which push services' hosts may be pushed to, and what a setting naming them may hold.

A push endpoint is a URL a user hands us and the server later POSTs to: only `https` to a host
of the allow-list (the well-known push services by default; `*` opens it to any public host),
never with credentials in it. `http` is accepted only for a loopback host, and only when a
development setting says so (a test's push service).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from diagnoxix.rules.fields import FieldErrors

MAX_ENDPOINT_CHARS = 2048
# The push services of Chrome (and Android), Firefox, Safari and Edge, and ntfy.sh (UnifiedPush's
# best-known distributor). A self-hosted UnifiedPush server is added by name.
DEFAULT_PUSH_HOSTS = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.apple.com",
    "*.notify.windows.com",
    "ntfy.sh",
)
SUBSCRIPTION_ID_REGEX = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_SUBSCRIPTION_ID = re.compile(SUBSCRIPTION_ID_REGEX)
_HOST_PATTERN = re.compile(r"^(\*|(\*\.)?[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
# An uncompressed P-256 point, and the authentication secret (RFC 8291, section 3).
P256DH_BYTES = 65
AUTH_BYTES = 16
SUBSCRIPTION_FIELDS = frozenset({"endpoint", "keys", "expirationTime"})


@dataclass(frozen=True, slots=True)
class SubscriptionInput:
    endpoint: str
    p256dh: str
    auth: str
    host: str


def is_host_pattern(text: str) -> bool:
    """A setting's entry: a host name, `*.` and a domain (any host under it), or `*` (any)."""
    return bool(_HOST_PATTERN.match(text.lower()))


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_subscription_id(text: str) -> bool:
    return bool(_SUBSCRIPTION_ID.match(text))


def b64url_bytes(text: str) -> bytes | None:
    if not _B64URL.match(text):
        return None
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return None


def _endpoint(
    value: Any, errors: FieldErrors, hosts: tuple[str, ...], allow_http_loopback: bool
) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_ENDPOINT_CHARS:
        errors.add("endpoint", f"must be a URL of at most {MAX_ENDPOINT_CHARS} characters")
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        errors.add("endpoint", "must be a URL")
        return None
    if not value.isascii() or any(c.isspace() for c in value) or parts.fragment or "@" in parts.netloc:
        errors.add("endpoint", "must be a URL without spaces, credentials or a fragment")
        return None
    if parts.scheme == "http" and allow_http_loopback and is_loopback_host(host):
        pass
    elif parts.scheme != "https":
        errors.add("endpoint", "must be an https URL")
        return None
    if not host or not host_allowed(host, hosts):
        errors.add("endpoint", "is not at a push service this server pushes to")
        return None
    return host.lower()


def check_subscription(
    payload: dict[str, Any], errors: FieldErrors, *, hosts: tuple[str, ...], allow_http_loopback: bool
) -> SubscriptionInput | None:
    """A browser's `PushSubscription.toJSON()`: `endpoint`, `keys` {`p256dh`, `auth`}, and an
    `expirationTime` (ignored: an expired subscription is answered 404 or 410 and removed)."""
    for name in sorted(set(payload) - SUBSCRIPTION_FIELDS):
        errors.add(name, "is not a known field")
    expiry = payload.get("expirationTime")
    if expiry is not None and (isinstance(expiry, bool) or not isinstance(expiry, int | float)):
        errors.add("expirationTime", "must be null or a number")
    host = _endpoint(payload.get("endpoint"), errors, hosts, allow_http_loopback)
    keys = payload.get("keys")
    p256dh = auth = None
    if not isinstance(keys, dict):
        errors.add("keys", "must be an object with p256dh and auth")
    else:
        for name in sorted(set(keys) - {"p256dh", "auth"}):
            errors.add(f"keys.{name}", "is not a known field")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        raw = b64url_bytes(p256dh) if isinstance(p256dh, str) and len(p256dh) < 200 else None
        if raw is None or len(raw) != P256DH_BYTES or not _on_curve(raw):
            errors.add("keys.p256dh", "must be an uncompressed P-256 public key, base64url")
        raw = b64url_bytes(auth) if isinstance(auth, str) and len(auth) < 100 else None
        if raw is None or len(raw) != AUTH_BYTES:
            errors.add("keys.auth", f"must be {AUTH_BYTES} bytes, base64url")
    if errors or host is None:
        return None
    assert isinstance(p256dh, str)
    assert isinstance(auth, str)
    return SubscriptionInput(str(payload["endpoint"]), p256dh.rstrip("="), auth.rstrip("="), host)


def _on_curve(raw: bytes) -> bool:
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        return False
    return raw[0] == 4
