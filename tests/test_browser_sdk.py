"""The browser SDK in a real browser (Debian's Chromium driven by Playwright) against the real
server process: it survives kill -9 and restart mid-stream, and read state follows the user
across pages.

The patient portal is a page on another origin (as in a clinic: the portal embeds our SDK), which
the server allows through DIAGNOXIX_ALLOWED_ORIGINS.
"""

from __future__ import annotations

import asyncio
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

# Debian's chromium with the flags this machine needs (shared with the dashboard's browser tests).
CHROMIUM = Path(CHROMIUM_PATH)
SECRET = "browser-test-secret-" + "b" * 40

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

PORTAL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Patient portal</title></head>
<body>
<p>Unread: <span id="badge">?</span></p>
<ul id="inbox"></ul>
<script src="{sdk}"></script>
<script>
  const params = new URLSearchParams(location.hash.slice(1));
  window.received = [];
  window.unread = null;
  window.states = [];
  window.welcomes = [];
  window.notify = DiagnoxixNotify.connect({{
    url: params.get("ws"),
    token: params.get("token"),
    baseBackoffMs: 100,
    maxBackoffMs: 800,
  }});
  notify.on("notification", (n) => {{
    received.push(n);
    const li = document.createElement("li");
    li.textContent = n.title;
    document.getElementById("inbox").appendChild(li);
  }});
  notify.on("unread", (count) => {{
    window.unread = count;
    document.getElementById("badge").textContent = String(count);
  }});
  notify.on("state", (state) => states.push(state));
  notify.on("welcome", (welcome) => welcomes.push(welcome));
</script>
</body></html>
"""


class Portal:
    """The clinic's patient portal: a static page on its own origin embedding the SDK."""

    def __init__(self, notify_port: int) -> None:
        self.port = free_port()
        self.notify_port = notify_port
        self.runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        sdk = f"http://127.0.0.1:{self.notify_port}/static/js/diagnoxix-notify.js"
        html = PORTAL_PAGE.format(sdk=sdk)

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

    def url_for(self, user: str) -> str:
        token = TokenIssuer(SECRET, default_ttl=3600, max_ttl=3600).mint(user).token
        ws = f"ws://127.0.0.1:{self.notify_port}/v1/ws/notifications"
        return f"{self.origin}/#ws={ws}&token={token}"


@pytest.fixture
async def setup(
    launcher: Launcher, tmp_path: Path
) -> AsyncIterator[tuple[Server, Portal, str, aiohttp.ClientSession]]:
    port = free_port()
    portal = Portal(port)
    env = child_env(DIAGNOXIX_SECRET_KEY=SECRET, DIAGNOXIX_ALLOWED_ORIGINS=portal.origin)
    db = tmp_path / "browser.sqlite3"
    server = await launcher.start(db, env=env, port=port)
    await portal.start()
    _, key = await create_api_key(db)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        try:
            yield server, portal, key, http
        finally:
            await portal.stop()


async def _send(
    http: aiohttp.ClientSession, port: int, key: str, user: str, title: str
) -> dict[str, Any] | None:
    """One notification; None when the server is down (the sender would retry later)."""
    try:
        async with http.post(
            f"http://127.0.0.1:{port}/v1/notifications",
            json={"user_id": user, "title": title, "message": "Please check the portal."},
            headers={"Authorization": f"Bearer {key}"},
        ) as resp:
            if resp.status != 201:
                return None
            return dict((await resp.json())["notification"])
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _open(browser: Browser, portal: Portal, user: str) -> Page:
    page = await browser.new_page()
    await page.goto(portal.url_for(user))
    await page.wait_for_function("window.notify && window.notify.state === 'open'", timeout=5000)
    return page


async def test_sdk_keeps_every_notification_once_in_order_across_kill_9(
    browser: Browser, setup: tuple[Server, Portal, str, aiohttp.ClientSession], launcher: Launcher
) -> None:
    server, portal, key, http = setup
    page = await _open(browser, portal, "patient-1")
    delivered: list[dict[str, Any]] = []
    for i in range(40):
        if i == 15:
            # Mid-stream: the process dies without any shutdown code, then comes back.
            await server.crash()
            server = await launcher.start(server.db, env=child_env(
                DIAGNOXIX_SECRET_KEY=SECRET, DIAGNOXIX_ALLOWED_ORIGINS=portal.origin
            ), port=server.port)  # fmt: skip
        note = await _send(http, server.port, key, "patient-1", f"result {i}")
        if note is not None:
            delivered.append(note)
        await asyncio.sleep(0.01)
    assert len(delivered) == 40
    await page.wait_for_function(f"window.received.length >= {len(delivered)}", timeout=10_000)
    await asyncio.sleep(0.3)  # a duplicate would arrive now
    received = await page.evaluate("window.received")
    assert [n["id"] for n in received] == [n["id"] for n in delivered]
    assert [n["seq"] for n in received] == sorted(n["seq"] for n in received)
    states = await page.evaluate("window.states")
    assert "reconnecting" in states
    assert states[-1] == "open"
    # The inbox shows the titles as text.
    assert await page.locator("#inbox li").count() == 40
    # The cursor survives a reload: nothing is replayed twice to a reloaded page.
    cursor = await page.evaluate("localStorage.getItem('diagnoxix-notify:patient-1')")
    assert json.loads(cursor)["seq"] == delivered[-1]["seq"]
    await page.reload()
    await page.wait_for_function("window.notify && window.notify.state === 'open'", timeout=5000)
    await asyncio.sleep(0.3)
    assert await page.evaluate("window.received.length") == 0


async def test_read_on_one_page_updates_the_other_within_a_second(
    browser: Browser, setup: tuple[Server, Portal, str, aiohttp.ClientSession]
) -> None:
    server, portal, key, http = setup
    phone = await _open(browser, portal, "patient-2")
    laptop = await _open(browser, portal, "patient-2")
    sent = [await _send(http, server.port, key, "patient-2", f"n{i}") for i in range(3)]
    for page in (phone, laptop):
        await page.wait_for_function("window.received.length === 3 && window.unread === 3", timeout=5000)
    first = sent[0]
    assert first is not None
    result = await phone.evaluate(f"window.notify.markRead([{json.dumps(first['id'])}])")
    assert result["ids"] == [first["id"]]
    await laptop.wait_for_function("document.getElementById('badge').textContent === '2'", timeout=1000)
    await phone.evaluate("window.notify.markAllRead()")
    await laptop.wait_for_function("window.unread === 0", timeout=1000)
    history = await laptop.evaluate("window.notify.history({limit: 2})")
    assert [n["title"] for n in history["notifications"]] == ["n2", "n1"]
    assert all(n["read"] for n in history["notifications"])


async def test_a_revoked_page_stops_instead_of_retrying_with_its_dead_token(
    browser: Browser, setup: tuple[Server, Portal, str, aiohttp.ClientSession]
) -> None:
    server, portal, key, http = setup
    page = await _open(browser, portal, "patient-3")
    await page.evaluate("window.errors = []; window.notify.on('error', (e) => window.errors.push(e))")
    async with http.delete(
        f"http://127.0.0.1:{server.port}/v1/users/patient-3/devices",
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    # A fixed token cannot be renewed: the page stops and says why, rather than retrying forever.
    await page.wait_for_function("window.notify.state === 'closed'", timeout=5000)
    assert [e["code"] for e in await page.evaluate("window.errors")] == [4003]
    await asyncio.sleep(0.5)
    assert await page.evaluate("window.notify.state") == "closed"


async def test_a_portal_page_sets_the_users_channel_preferences_across_origins(
    browser: Browser, setup: tuple[Server, Portal, str, aiohttp.ClientSession]
) -> None:
    server, portal, key, http = setup
    page = await _open(browser, portal, "patient-4")
    chosen = await page.evaluate(
        "window.notify.setPreferences({time_zone: 'Europe/Berlin',"
        " quiet_hours: {start: '22:00', end: '07:00'}, channels: {appointment_reminder: {push: false}}})"
    )
    assert chosen["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    async with http.get(
        f"http://127.0.0.1:{server.port}/v1/users/patient-4/preferences",
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        assert (await resp.json())["channels"] == {"appointment_reminder": {"push": False}}
    # A refusal comes back as the API's error, naming the field.
    error = await page.evaluate(
        "window.notify.setPreferences({time_zone: 'Mars/Base'}).then(() => null, (e) => e)"
    )
    assert error["code"] == "validation_failed"
    assert "time_zone" in error["details"]
    assert (await page.evaluate("window.notify.resetPreferences()"))["quiet_hours"] is None
    assert (await page.evaluate("window.notify.getPreferences()"))["time_zone"] == "UTC"
