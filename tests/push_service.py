"""A push service for the tests, speaking RFC 8030 on loopback, and the browsers that subscribe
to it.

It checks what a real one checks (the VAPID JWT's ES256 signature with the key it names, its
audience and expiry; `aes128gcm`, `TTL`), then decrypts the payload with the subscription's
private key (http_ece, RFC 8291), as the browser would. Each subscription answers from a script
of statuses (201 once the script runs out), so a test can make it answer 404, 410, 429 or 5xx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import http_ece
import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# A scripted "status" that answers nothing for HANG_SECONDS (longer than the tests' push timeout).
HANG = 0
HANG_SECONDS = 3.0


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One push subscription as a browser holds it: its private key and auth secret."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    # Statuses to answer, in order (then 201), with a Retry-After for each if given.
    script: list[tuple[int, str | None]] = field(default_factory=list)

    def subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives a page."""
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


@dataclass
class Received:
    """A push as the service got it: the decrypted payload, its headers, what it answered."""

    browser_id: str
    payload: dict[str, Any]
    headers: dict[str, str]
    claims: dict[str, Any]
    status: int
    at: float


class PushService:
    """`await PushService.start()`, then `browser()` for each subscription; `close()` at the end."""

    def __init__(self) -> None:
        self.browsers: dict[str, Browser] = {}
        self.received: list[Received] = []
        # Requests refused before decryption (bad signature, wrong key): the reason each.
        self.refused: list[str] = []
        # The server's VAPID public key (base64url): pushes signed with another are refused.
        self.vapid_key: str | None = None
        self.server: TestServer | None = None

    @classmethod
    async def start(cls, port: int = 0) -> PushService:
        service = cls()
        app = web.Application()
        app.router.add_post("/push/{browser_id}", service._push)
        service.server = TestServer(app, host="127.0.0.1", port=port or None)
        await service.server.start_server()
        return service

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def browser(self, *script: int | tuple[int, str]) -> Browser:
        bid = uuid4().hex
        steps: list[tuple[int, str | None]] = [
            (s, None) if isinstance(s, int) else (s[0], s[1]) for s in script
        ]
        made = Browser(
            bid, f"{self.origin}/push/{bid}", ec.generate_private_key(ec.SECP256R1()), os.urandom(16), steps
        )
        self.browsers[bid] = made
        return made

    def accepted(self, browser: Browser | None = None) -> list[Received]:
        return [
            r for r in self.received if r.status == 201 and (browser is None or r.browser_id == browser.id)
        ]

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.refused.append(reason)
        return web.Response(status=status, text=reason)

    async def _push(self, request: web.Request) -> web.Response:
        browser = self.browsers.get(request.match_info["browser_id"])
        if browser is None:
            return self._refuse(404, "no such subscription")
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        params = dict(part.strip().split("=", 1) for part in credentials.split(",") if "=" in part)
        if scheme != "vapid" or "t" not in params or "k" not in params:
            return self._refuse(401, "no VAPID authorization")
        if self.vapid_key is not None and params["k"] != self.vapid_key:
            return self._refuse(403, "signed with another key")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(params["k"]))
        try:
            claims = jwt.decode(params["t"], public, algorithms=["ES256"], audience=self.origin)
        except jwt.PyJWTError as exc:
            return self._refuse(403, f"bad VAPID token: {type(exc).__name__}")
        if not 0 < claims["exp"] - time.time() <= 24 * 3600 or "sub" not in claims:
            return self._refuse(403, "VAPID claims out of bounds")
        if request.headers.get("Content-Encoding") != "aes128gcm" or "TTL" not in request.headers:
            return self._refuse(400, "not an RFC 8030/8291 push")
        body = await request.read()
        plaintext = http_ece.decrypt(
            body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm"
        )
        status, retry_after = browser.script.pop(0) if browser.script else (201, None)
        if status == HANG:  # no answer in time: the server's timeout ends the request
            await asyncio.sleep(HANG_SECONDS)
        self.received.append(
            Received(
                browser.id, json.loads(plaintext), dict(request.headers), claims, status, time.monotonic()
            )
        )
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if 300 <= status < 400:  # a redirect to itself: followed, it would come back here
            headers["Location"] = f"{self.origin}/push/{browser.id}"
        if status == 201:
            headers["Location"] = f"{self.origin}/message/{uuid4().hex}"
        return web.Response(status=status, headers=headers)
