"""Corrections in a real browser: two open pages of one patient render the browser SDK's list
(`notifications()`); a notification retracted over the HTTP API disappears from the second page
within a second, and an updated one shows its new words, against the real server process."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from .processes import Launcher, Server, child_env, create_api_key, free_port
from .test_browser_sdk import CHROMIUM, SECRET, Portal, _send

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

# A retracted notification must be gone from every open page of the user within this.
WITHIN_SECONDS = 1.0

LIST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Patient portal</title></head>
<body>
<ul id="inbox"></ul>
<script src="{sdk}"></script>
<script>
  const params = new URLSearchParams(location.hash.slice(1));
  window.corrections = [];
  window.notify = DiagnoxixNotify.connect({{ url: params.get("ws"), token: params.get("token") }});
  function render() {{
    const inbox = document.getElementById("inbox");
    inbox.replaceChildren(...notify.notifications().map((n) => {{
      const li = document.createElement("li");
      li.dataset.id = n.id;
      li.textContent = n.title + ": " + n.message;
      return li;
    }}));
  }}
  notify.on("notification", render);
  notify.on("retracted", (c) => {{ corrections.push(["retracted", c.id]); render(); }});
  notify.on("updated", (n) => {{ corrections.push(["updated", n.id]); render(); }});
</script>
</body></html>
"""


class ListPortal(Portal):
    async def start(self) -> None:
        html = LIST_PAGE.format(sdk=f"http://127.0.0.1:{self.notify_port}/static/js/diagnoxix-notify.js")

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", page)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


@pytest.fixture
async def setup(
    launcher: Launcher, tmp_path: Path
) -> AsyncIterator[tuple[Server, ListPortal, str, aiohttp.ClientSession]]:
    port = free_port()
    portal = ListPortal(port)
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


async def _open(browser: Browser, portal: Portal, user: str) -> Page:
    page = await browser.new_page()
    await page.goto(portal.url_for(user))
    await page.wait_for_function("window.notify && window.notify.state === 'open'", timeout=5000)
    return page


async def test_a_retracted_notification_leaves_the_second_page_within_a_second(
    browser: Browser, setup: tuple[Server, ListPortal, str, aiohttp.ClientSession]
) -> None:
    server, portal, key, http = setup
    phone = await _open(browser, portal, "patient-1")
    laptop = await _open(browser, portal, "patient-1")
    kept = await _send(http, server.port, key, "patient-1", "Appointment Confirmed")
    wrong = await _send(http, server.port, key, "patient-1", "Lab Result Ready")
    assert kept is not None
    assert wrong is not None
    for page in (phone, laptop):
        await page.wait_for_function("document.querySelectorAll('#inbox li').length === 2", timeout=5000)
    auth = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{server.port}/v1/notifications"

    started = time.monotonic()
    async with http.post(
        f"{base}/{wrong['id']}/retract", json={"reason": "wrong patient"}, headers=auth
    ) as r:
        assert r.status == 200, await r.text()
    gone = f"!document.querySelector('#inbox li[data-id={json.dumps(wrong['id'])}]')"
    await laptop.wait_for_function(gone, timeout=WITHIN_SECONDS * 1000)
    elapsed = time.monotonic() - started
    print(f"retracted notification gone from the second page after {elapsed * 1000:.0f} ms")
    assert elapsed < WITHIN_SECONDS
    await phone.wait_for_function(gone, timeout=1000)
    for page in (phone, laptop):
        assert await page.evaluate("window.corrections") == [["retracted", wrong["id"]]]
        assert await page.evaluate("notify.notifications().map((n) => n.id)") == [kept["id"]]

    async with http.patch(
        f"{base}/{kept['id']}", json={"message": "Now at 3:00 PM", "reason": "moved"}, headers=auth
    ) as r:
        assert r.status == 200, await r.text()
    await laptop.wait_for_function(
        "document.querySelector('#inbox li').textContent === 'Appointment Confirmed: Now at 3:00 PM'",
        timeout=1000,
    )

    # A reloaded page resumes from its cursor: the corrections are not replayed to it again.
    await laptop.reload()
    await laptop.wait_for_function("window.notify && window.notify.state === 'open'", timeout=5000)
    assert await laptop.evaluate("window.corrections") == []
