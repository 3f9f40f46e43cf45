"""A real webhook receiver on a loopback port, as a clinic's gateway would be: it verifies each
POST's signature with the `standardwebhooks` library and answers as a test tells it to (a
status, or no answer at all), remembering what it got and which deliveries it answered 2xx."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

HANG = 0  # the `answer` that keeps the request waiting (until `hang_seconds` have passed)


@dataclass
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    verified: bool


@dataclass
class Receiver:
    secret: str
    answer: int = 200
    hang_seconds: float = 30.0
    received: list[Received] = field(default_factory=list)
    # webhook-id -> how many times this receiver answered it 2xx (a verified delivery).
    answered: Counter[str] = field(default_factory=Counter)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        try:
            body = Webhook(self.secret).verify(raw, headers)
            verified = True
        except WebhookVerificationError:
            body, verified = None, False
        self.received.append(Received(headers.get("webhook-id", ""), headers, body, verified))
        self.arrived.set()
        if not verified:
            return web.Response(status=401)
        answer = self.answer
        if answer == HANG:
            await asyncio.sleep(self.hang_seconds)
            return web.Response(status=504)
        if 200 <= answer < 300:
            self.answered[headers["webhook-id"]] += 1
        return web.Response(status=answer, text=json.dumps({"ok": answer < 300}))

    async def start(self, path: str = "/hooks/sms") -> Receiver:
        app = web.Application()
        app.router.add_post(path, self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{path}"
        return self

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Until `count` POSTs have arrived in all (fails the test after `timeout` seconds)."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
