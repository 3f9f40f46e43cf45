"""The browser SDK's SSE fallback in a real browser (Debian's Chromium) behind a real proxy that
strips the WebSocket upgrade, as some hospital proxies do, in front of the real server process.

The proxy is a TCP relay on loopback that, while `strip` is set, removes `Upgrade` and
`Connection` from every request it passes (the server then answers a would-be WebSocket with a
400, and the browser's socket fails before it opens), and answers 502 while the server is down,
as nginx does. The patient portal is a page on another origin, allowed by
DIAGNOXIX_ALLOWED_ORIGINS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from diagnoxix.auth import TokenIssuer

from .dashboard_support import CHROMIUM as CHROMIUM_PATH
from .processes import Launcher, Server, child_env, create_api_key, free_port

CHROMIUM = Path(CHROMIUM_PATH)
SECRET = "browser-sse-secret-" + "e" * 40
# A request head bigger than this is not a browser's.
MAX_HEAD_BYTES = 64 * 1024
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

PORTAL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Patient portal</title></head>
<body>
<ul id="inbox"></ul>
<script src="{sdk}"></script>
<script>
  const params = new URLSearchParams(location.hash.slice(1));
  window.received = [];
  window.states = [];
  window.transports = [];
  window.unread = null;
  window.notify = DiagnoxixNotify.connect({{
    url: params.get("ws"),
    token: params.get("token"),
    baseBackoffMs: 100,
    maxBackoffMs: 800,
    wsRetryMs: Number(params.get("wsRetryMs")),
  }});
  notify.on("notification", (n) => received.push(n));
  notify.on("state", (state) => states.push(state));
  notify.on("transport", (t) => transports.push(t));
  notify.on("unread", (count) => {{ window.unread = count; }});
</script>
</body></html>
"""


class StrippingProxy:
    """A TCP relay to the server that strips the upgrade from requests while `strip` is set."""

    def __init__(self, backend_port: int) -> None:
        self.port = free_port()
        self.backend_port = backend_port
        self.strip = True
        self.stripped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _strip(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        kept = [line for line in lines if not line.lower().startswith((b"upgrade:", b"connection:"))]
        if len(kept) != len(lines):
            self.stripped += 1
        # One request per connection: nothing later on it passes unstripped.
        return b"\r\n".join([*kept[:-2], b"Connection: close", b"", b""])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD_BYTES:
                return
            try:
                back_reader, upstream = await asyncio.open_connection("127.0.0.1", self.backend_port)
            except OSError:
                writer.write(BAD_GATEWAY)
                await writer.drain()
                return
            upstream.write(self._strip(head) if self.strip else head)
            await asyncio.gather(_pipe(reader, upstream), _pipe(back_reader, writer))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Portal:
    """The clinic's patient portal: a static page on its own origin embedding the SDK."""

    def __init__(self, proxy_port: int) -> None:
        self.port = free_port()
        self.proxy_port = proxy_port
        self.runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        html = PORTAL_PAGE.format(sdk=f"http://127.0.0.1:{self.proxy_port}/static/js/diagnoxix-notify.js")

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", page)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def url_for(self, user: str, ws_retry_ms: int) -> str:
        token = TokenIssuer(SECRET, default_ttl=3600, max_ttl=3600).mint(user).token
        ws = f"ws://127.0.0.1:{self.proxy_port}/v1/ws/notifications"
        return f"{self.origin}/#ws={ws}&token={token}&wsRetryMs={ws_retry_ms}"


Setup = tuple[Server, StrippingProxy, Portal, str, aiohttp.ClientSession]


@pytest.fixture
async def setup(launcher: Launcher, tmp_path: Path) -> AsyncIterator[Setup]:
    port = free_port()
    proxy = StrippingProxy(port)
    portal = Portal(proxy.port)
    db = tmp_path / "browser-sse.sqlite3"
    server = await launcher.start(db, env=_env(portal), port=port)
    await proxy.start()
    await portal.start()
    _, key = await create_api_key(db)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        try:
            yield server, proxy, portal, key, http
        finally:
            await portal.stop()
            await proxy.stop()


def _env(portal: Portal) -> dict[str, str]:
    return child_env(DIAGNOXIX_SECRET_KEY=SECRET, DIAGNOXIX_ALLOWED_ORIGINS=portal.origin)


async def _send(
    http: aiohttp.ClientSession, port: int, key: str, user: str, title: str
) -> dict[str, Any] | None:
    """One notification, straight to the server; None when it is down (the sender retries later)."""
    try:
        async with http.post(
            f"http://127.0.0.1:{port}/v1/notifications",
            json={"user_id": user, "title": title, "message": "Please check the portal."},
            headers={"Authorization": f"Bearer {key}"},
        ) as resp:
            return dict((await resp.json())["notification"]) if resp.status == 201 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _open_on_sse(browser: Browser, portal: Portal, user: str, ws_retry_ms: int) -> Page:
    page = await browser.new_page()
    await page.goto(portal.url_for(user, ws_retry_ms))
    await page.wait_for_function("notify.state === 'open' && notify.transport === 'sse'", timeout=10_000)
    return page


async def _history(http: aiohttp.ClientSession, server: Server, key: str, user: str) -> list[dict[str, Any]]:
    async with http.get(
        f"{server.url}/v1/users/{user}/notifications?limit=100", headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return list((await resp.json())["notifications"])


async def test_sdk_falls_back_to_sse_and_keeps_every_notification_once_across_kill_9(
    browser: Browser, setup: Setup, launcher: Launcher
) -> None:
    server, proxy, portal, key, http = setup
    page = await _open_on_sse(browser, portal, "patient-1", ws_retry_ms=600_000)
    assert proxy.stripped >= 2  # the WebSocket was tried, and its upgrade never reached the server
    assert await page.evaluate("window.transports") == ["sse"]
    delivered: list[dict[str, Any]] = []
    for i in range(40):
        if i == 15:
            # Mid-stream: the process dies without any shutdown code, then comes back.
            await server.crash()
            server = await launcher.start(server.db, env=_env(portal), port=server.port)
        note = await _send(http, server.port, key, "patient-1", f"result {i}")
        if note is not None:
            delivered.append(note)
        await asyncio.sleep(0.01)
    assert len(delivered) == 40
    await page.wait_for_function(f"window.received.length >= {len(delivered)}", timeout=15_000)
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    received = await page.evaluate("window.received")
    assert [n["id"] for n in received] == [n["id"] for n in delivered]
    states = await page.evaluate("window.states")
    assert "reconnecting" in states
    assert states[-1] == "open"
    assert await page.evaluate("notify.transport") == "sse"
    # Acknowledged over HTTP: the server knows every one reached the page.
    for _ in range(50):
        if all(n["delivered_at"] for n in await _history(http, server, key, "patient-1")):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("notifications received over SSE were never acknowledged")
    # Read marks go over HTTP too, and the count comes back on the stream.
    result = await page.evaluate(f"notify.markRead([{json.dumps(delivered[0]['id'])}])")
    assert result["ids"] == [delivered[0]["id"]]
    await page.wait_for_function("window.unread === 39", timeout=5000)
    history = await page.evaluate("notify.history({limit: 2})")
    assert [n["title"] for n in history["notifications"]] == ["result 39", "result 38"]
    # A person acknowledges a critical item over HTTP too.
    async with http.post(
        f"{server.url}/v1/notifications",
        json={"user_id": "patient-1", "title": "Call the clinic", "message": "", "priority": "critical"},
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        critical = (await resp.json())["notification"]
    await page.wait_for_function(f"window.received.length === {len(delivered) + 1}", timeout=5000)
    answer = await page.evaluate(f"notify.acknowledge({json.dumps(critical['id'])})")
    assert answer["changed"] is True
    async with http.get(
        f"{server.url}/v1/notifications/{critical['id']}/acknowledgement",
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        status = await resp.json()
    assert (status["state"], status["acknowledged_by"], status["acknowledged_via"]) == (
        "acknowledged",
        "patient-1",
        "http",
    )


async def test_sdk_goes_back_to_the_websocket_once_it_opens_without_loss_or_duplicate(
    browser: Browser, setup: Setup
) -> None:
    server, proxy, portal, key, http = setup
    page = await _open_on_sse(browser, portal, "patient-2", ws_retry_ms=500)
    sent = [await _send(http, server.port, key, "patient-2", f"before {i}") for i in range(5)]
    await page.wait_for_function("window.received.length === 5", timeout=5000)
    proxy.strip = False  # the network lets the upgrade through again
    sending = [await _send(http, server.port, key, "patient-2", f"switching {i}") for i in range(10)]
    await page.wait_for_function("notify.transport === 'websocket'", timeout=10_000)
    after = [await _send(http, server.port, key, "patient-2", f"after {i}") for i in range(5)]
    expected = [n for n in sent + sending + after if n is not None]
    assert len(expected) == 20
    await page.wait_for_function("window.received.length >= 20", timeout=5000)
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    received = await page.evaluate("window.received")
    assert [n["id"] for n in received] == [n["id"] for n in expected]
    assert await page.evaluate("window.transports") == ["sse", "websocket"]
    # The stream was closed: only the WebSocket is left on the server.
    for _ in range(50):
        async with http.get(f"{server.url}/v1/ws/stats") as resp:
            if (await resp.json())["connections"] == 1:
                break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the SSE stream outlived the switch back to the WebSocket")
