"""Who a request comes from: the peer's address, or what a trusted proxy says it forwarded.

Behind nginx every request comes from the proxy's address. Its `X-Forwarded-For` and
`X-Forwarded-Proto` are believed only when the peer is one of `DIAGNOXIX_TRUSTED_PROXIES`: anyone
else could write them. The client is then the right-most forwarded address that is not itself a
trusted proxy (entries to its left were written by the client and prove nothing).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable

from aiohttp import web

from diagnoxix.logs import AccessLogger

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.5`, `10.0.0.0/8`, `::1`; ValueError names an entry that is neither."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def parse_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as an IP, an IPv4 client seen through a dual-stack listener (`::ffff:a.b.c.d`) as
    IPv4; None for what is not an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Forwarding:
    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self._trusted = trusted

    def trusts(self, address: str | None) -> bool:
        if not self._trusted or address is None:
            return False
        ip = parse_address(address)
        return ip is not None and any(ip in network for network in self._trusted)

    def address(self, request: web.BaseRequest) -> str:
        """The client's address as far as it can be known; the peer's unless a trusted proxy."""
        peer = request.remote or "unknown"
        if not self.trusts(peer):
            return peer
        forwarded = [a.strip() for a in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
        for candidate in reversed([a for a in forwarded if a]):
            if not self.trusts(candidate):
                return candidate
        return peer

    def scheme(self, request: web.BaseRequest) -> str:
        """`https` or `http` as the browser used it: a trusted proxy may have ended TLS."""
        if self.trusts(request.remote):
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            if proto in {"http", "https"}:
                return proto
        return request.scheme


def access_logger_class(forwarding: Forwarding) -> type[AccessLogger]:
    """The access log's class (aiohttp makes its instance), naming each request's client as
    `forwarding.address` does: behind nginx, the address nginx forwarded, not nginx's own."""

    class ForwardedAccessLogger(AccessLogger):
        def client(self, request: web.BaseRequest) -> str | None:
            return forwarding.address(request)

    return ForwardedAccessLogger


# Characters of a User-Agent kept on a device or push subscription record: enough to tell a
# browser and its platform apart, never a header's worth of text per record.
USER_AGENT_CHARS = 200


def stored_user_agent(request: web.BaseRequest) -> str | None:
    """The request's User-Agent as a record keeps it: the first USER_AGENT_CHARS characters,
    bytes that were not UTF-8 and control characters (NUL among them, which no store can hold)
    each shown as U+FFFD. Raw, such text fails the write that carries it, and with SQLite the
    batch of writes it shares."""
    raw = request.headers.get("User-Agent", "")[:USER_AGENT_CHARS]
    if raw.isascii() and raw.isprintable():
        return raw or None
    # aiohttp keeps such bytes as lone surrogates (U+DC80-U+DCFF): back to bytes, then decoded.
    # Another surrogate cannot be encoded: it is replaced below, as not printable.
    with contextlib.suppress(UnicodeEncodeError):
        raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in raw) or None
