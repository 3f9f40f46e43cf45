"""The SDK examples in docs/sdk.md work as written: the Python one against the real server, the React
hook in Chromium on a portal of another origin (with a few lines standing in for React's hooks)."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from diagnoxix.auth import TokenIssuer

from .dashboard_support import CHROMIUM, CHROMIUM_ARGS
from .processes import Launcher, Server, child_env, create_api_key, free_port

SDK_DOC = Path(__file__).resolve().parent.parent / "docs" / "sdk.md"
SECRET = "sdk-examples-secret-" + "e" * 40


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", SDK_DOC.read_text(encoding="utf-8"), re.S)


class _Found(Exception):
    """Ends the example's endless `async for` once a notification was handled."""


async def test_the_python_example_runs_as_written(launcher: Launcher, tmp_path: Path) -> None:
    db = tmp_path / "sdk.sqlite3"
    server = await launcher.start(db, env=child_env(DIAGNOXIX_SECRET_KEY=SECRET))
    _, api_key = await create_api_key(db)
    sends, subscribes = _blocks("python")
    handled: list[dict[str, Any]] = []

    def handle(notification: dict[str, Any]) -> None:
        handled.append(notification)
        raise _Found

    url = f"http://127.0.0.1:{server.port}"
    namespace: dict[str, Any] = {"api_key": api_key, "handle": handle}
    body = (sends + subscribes).replace("http://127.0.0.1:7556", url)
    exec(compile(f"async def example():\n{textwrap.indent(body, '    ')}", "docs/sdk.md", "exec"), namespace)
    # Under `filterwarnings = error`, a client used after closing it, or left unclosed, fails here.
    with pytest.raises(_Found):
        await asyncio.wait_for(namespace["example"](), timeout=20)
    titles = [n["title"] for n in handled]
    assert titles == ["Lab Result Ready"]


# React's hooks as the test page needs them (tests/fixtures/react-hooks-shim.js).
HOOKS_SHIM = (Path(__file__).parent / "fixtures" / "react-hooks-shim.js").read_text(encoding="utf-8")

PORTAL = """<!doctype html><html><head><meta charset="utf-8"><title>Portal</title></head><body>
<script type="module">
{shim}
{hook}
const token = new URLSearchParams(location.hash.slice(1)).get("token");
window.tokenCalls = 0;
const getTokenInline = () => {{ window.tokenCalls++; return Promise.resolve(token); }};
component = () => useWebSocketNotifications("p1", () => getTokenInline());
window.rerender = render;
render();
</script></body></html>
"""


@pytest.fixture
async def portal(launcher: Launcher, tmp_path: Path) -> AsyncIterator[tuple[Server, str, str]]:
    portal_port = free_port()
    origin = f"http://127.0.0.1:{portal_port}"
    db = tmp_path / "hook.sqlite3"
    server = await launcher.start(
        db, env=child_env(DIAGNOXIX_SECRET_KEY=SECRET, DIAGNOXIX_ALLOWED_ORIGINS=origin)
    )
    _, api_key = await create_api_key(db)
    (hook,) = _blocks("javascript")
    hook = (
        hook.replace('import { useEffect, useRef, useState } from "react";\n', "")
        .replace("https://notify.clinic.example/static", f"http://127.0.0.1:{server.port}/static")
        .replace("wss://notify.clinic.example/v1", f"ws://127.0.0.1:{server.port}/v1")
        .replace("export function", "function")
    )
    page = PORTAL.format(shim=HOOKS_SHIM, hook=hook)

    async def serve_page(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", serve_page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", portal_port).start()
    try:
        yield (
            server,
            f"{origin}/#token=" + TokenIssuer(SECRET, default_ttl=600, max_ttl=600).mint("p1").token,
            api_key,
        )
    finally:
        await runner.cleanup()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
async def test_the_react_hook_keeps_one_connection_on_a_portal_of_another_origin(
    portal: tuple[Server, str, str],
) -> None:
    server, url, api_key = portal
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)
            await page.wait_for_function("window.view && window.view.connected", timeout=5000)
            # The portal re-renders for its own reasons, handing the hook a new inline getToken each time.
            for _ in range(20):
                await page.evaluate("window.rerender()")
            await asyncio.sleep(0.5)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.url}/v1/ws/stats") as resp:
                    assert (await resp.json())["connections"] == 1
                async with http.post(
                    f"{server.url}/v1/notifications",
                    json={"user_id": "p1", "title": "Lab Result Ready", "message": "m"},
                    headers={"Authorization": f"Bearer {api_key}"},
                ) as resp:
                    assert resp.status == 201
            await page.wait_for_function("window.view.notifications.length === 1 && window.view.unread === 1")
            assert await page.evaluate("window.tokenCalls") == 1
            await page.evaluate("window.view.markAllRead()")
            await page.wait_for_function("window.view.unread === 0", timeout=2000)
            assert errors == []
        finally:
            await browser.close()
