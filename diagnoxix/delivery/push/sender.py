"""Sends one push to a push service (RFC 8030): encrypted for the browser (RFC 8291, `aes128gcm`,
by pywebpush), signed with our VAPID key (RFC 8292, by py-vapid), posted with aiohttp on the
event loop.

The endpoint is a URL a user handed us, so the request is guarded: only a host the rules allowed
when it was registered, only to public addresses (each name is resolved through a resolver that
drops private, loopback and link-local ones, so a name that later points inside the network is
refused at connect time), no redirects, a bounded time and a bounded read of the answer. The
endpoint and keys are never logged: only the host.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from pywebpush import WebPusher

from diagnoxix.delivery.push.vapid import VapidSigner
from diagnoxix.store.push_records import PushSubscription

log = logging.getLogger("diagnoxix.push")

# A push service's answer is a status and a few headers; its body is never needed.
MAX_ANSWER_BYTES = 4096
# Status 0: the push service did not answer (refused, timed out, not a public address).
NO_ANSWER = 0
# Not an HTTP status: the subscription's key cannot be encrypted for (it is removed, as on 410).
UNUSABLE_KEY = -1
# Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class PushAnswer:
    status: int
    # Seconds the push service asked us to wait (Retry-After), if it said.
    retry_after: float | None = None


def address_allowed(address: str, allow_loopback: bool) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_global or (allow_loopback and ip.is_loopback)


class PublicOnlyResolver(AbstractResolver):
    """Resolves as aiohttp would, keeping only public addresses (and loopback when allowed)."""

    def __init__(self, allow_loopback: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if address_allowed(r["host"], self._allow_loopback)]
        if not kept:
            raise OSError(f"{host} resolves to no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds, or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:7]), MAX_RETRY_AFTER_SECONDS))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min((when - now).total_seconds(), MAX_RETRY_AFTER_SECONDS))


class PushSender:
    """One aiohttp session for every push (connections to a push service are reused)."""

    def __init__(self, signer: VapidSigner, *, timeout: float, allow_loopback: bool) -> None:
        self._signer = signer
        self._allow_loopback = allow_loopback
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(self._allow_loopback), limit=100)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False, trust_env=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, sub: PushSubscription, plaintext: bytes, *, ttl: int, urgency: str, topic: str, now: datetime
    ) -> PushAnswer:
        host = urlsplit(sub.endpoint).hostname or ""
        if _is_ip(host) and not address_allowed(host, self._allow_loopback):
            log.warning("push.address_refused", extra={"host": sub.host})
            return PushAnswer(NO_ANSWER)
        try:
            pusher = WebPusher({"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}})
            body = pusher.encode(plaintext, "aes128gcm")["body"]
        except ValueError:  # the browser's key is not a point on P-256: nothing can be sent to it
            log.warning("push.unusable_key", extra={"host": sub.host})
            return PushAnswer(UNUSABLE_KEY)
        headers = {
            "Authorization": self._signer.authorization(sub.endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            "Urgency": urgency,
            "Topic": topic,
        }
        try:
            async with self._client().post(
                sub.endpoint, data=body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.content.read(MAX_ANSWER_BYTES)
                return PushAnswer(resp.status, retry_after_seconds(resp.headers.get("Retry-After"), now))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("push.no_answer", extra={"host": sub.host, "error": type(exc).__name__})
            return PushAnswer(NO_ANSWER)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
