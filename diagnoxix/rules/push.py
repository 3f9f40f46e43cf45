"""The rules of Web Push input: a browser's push subscription (RFC 8030 endpoint, RFC 8291 keys),
which push services' hosts may be pushed to, and what a setting naming them may hold.

A push endpoint is a URL a user hands us and the server later POSTs to: only `https` to a host
of the allow-list (the well-known push services by default; `*` opens it to any public host),
never with credentials in it. `http` is accepted only for a loopback host, and only when a
development setting says so (a test's push service).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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
# An uncompressed P-256 point (65 bytes, the first 0x04) and the authentication secret (16
# bytes), base64url (RFC 8291, section 3). Whether the point is on the curve shows when a push
# is encrypted for it: a subscription whose key is not is removed then.
P256DH_REGEX = r"^B[A-P][A-Za-z0-9_-]{84}[AEIMQUYcgkosw048]=?$"
AUTH_REGEX = r"^[A-Za-z0-9_-]{21}[AQgw](?:==)?$"
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


def endpoint_regex(hosts: tuple[str, ...], allow_http_loopback: bool) -> str:
    """The endpoints a subscription may name, as one pattern (the OpenAPI document shows it): https
    (http too for a loopback host, when allowed) to a host of the allow-list, an optional port, a
    path of URL-safe characters; lowercase host, no credentials, no query or fragment needed."""
    label = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    alternatives = []
    for pattern in hosts:
        pattern = pattern.lower()
        if pattern == "*":
            host = rf"{label}(?:\.{label})*"
        elif pattern.startswith("*."):
            host = rf"{label}(?:\.{label})*{re.escape(pattern[1:])}"
        else:
            host = re.escape(pattern)
        scheme = "https?" if allow_http_loopback and is_loopback_host(pattern) else "https"
        alternatives.append(f"{scheme}://{host}")
    if not alternatives:
        return "^(?!)$"
    return rf"^(?:{'|'.join(alternatives)})(?::[1-9][0-9]{{0,4}})?(?:/[A-Za-z0-9._~%:/+=-]*)?$"


def _endpoint(
    value: Any, errors: FieldErrors, hosts: tuple[str, ...], allow_http_loopback: bool
) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_ENDPOINT_CHARS:
        errors.add("endpoint", f"must be a URL of at most {MAX_ENDPOINT_CHARS} characters")
        return None
    if not re.fullmatch(endpoint_regex(hosts, allow_http_loopback), value):
        errors.add("endpoint", "must be an https URL at a push service this server pushes to")
        return None
    try:
        host = urlsplit(value).hostname or ""
        urlsplit(value).port  # noqa: B018 - raises ValueError for a port past 65535
    except ValueError:
        errors.add("endpoint", "must be a URL")
        return None
    if _numeric_but_no_address(host):
        errors.add("endpoint", "must name a host, or an IP address written in full")
        return None
    if _is_private_ip(host) and not (allow_http_loopback and is_loopback_host(host)):
        errors.add("endpoint", "must be at a public address")
        return None
    return host


def _numeric_but_no_address(host: str) -> bool:
    """`127.1`, `2130706433`, `0177.0.0.1`, `0x7f000001`: no name (a top-level domain is never
    numeric) and no address `ipaddress` reads, so the private-address check cannot judge them,
    while resolvers and libraries read them as addresses, loopback among them."""
    last = host.rsplit(".", 1)[-1]
    if not (last.isdigit() or last.startswith("0x")):
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


def _is_private_ip(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


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
        if not isinstance(p256dh, str) or not re.fullmatch(P256DH_REGEX, p256dh):
            errors.add("keys.p256dh", "must be an uncompressed P-256 public key (65 bytes), base64url")
        if not isinstance(auth, str) or not re.fullmatch(AUTH_REGEX, auth):
            errors.add("keys.auth", "must be 16 bytes, base64url")
    if errors or host is None:
        return None
    assert isinstance(p256dh, str)
    assert isinstance(auth, str)
    return SubscriptionInput(str(payload["endpoint"]), p256dh.rstrip("="), auth.rstrip("="), host)
