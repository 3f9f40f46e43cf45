"""Shared by the dashboard tests and `make screenshots`: a real server on a loopback port with
its own SQLite file, a staff account, Debian's chromium, and a signed-in browser page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from diagnoxix.config import Settings
from diagnoxix.dashboard.accounts import create_account
from diagnoxix.dashboard.state import DASHBOARD
from diagnoxix.keys import API_KEYS, STORE, TOKENS

from .servers import start_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = "alice"
ADMIN_PASSWORD = "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@dataclass
class LiveServer:
    """The whole service (API, patient sockets, dashboard) on 127.0.0.1:<port>."""

    server: TestServer
    url: str
    settings: Settings

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/ws/notifications"

    def token(self, user_id: str) -> str:
        return self.app[TOKENS].mint(user_id, 600).token

    async def api_key(self) -> str:
        _, secret = await self.app[API_KEYS].create("test-service")
        return secret

    async def add_staff(self, username: str, password: str, role: str = "admin") -> None:
        app = self.app
        assert await create_account(app[STORE], app[DASHBOARD].passwords, username, password, role)

    async def close(self) -> None:
        await self.server.close()


async def start_server(db_dir: Path, *, with_admin: bool = True, **overrides: Any) -> LiveServer:
    settings = Settings(
        db_path=db_dir / "dashboard.sqlite3",
        secret_key="dashboard-test-secret-" + "y" * 40,
        log_json=False,
        port=0,
    ).with_overrides(**overrides)
    running = await start_app(settings)
    server = LiveServer(running, str(running.make_url("")).rstrip("/"), settings)
    if with_admin:
        await server.add_staff(ADMIN, ADMIN_PASSWORD)
    return server


async def launch_chromium(playwright: Any) -> Any:
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


async def browser_login(
    page: Any, server: LiveServer, username: str = ADMIN, password: str = ADMIN_PASSWORD
) -> None:
    """Sign in through the form, with the keyboard, as staff would."""
    await page.goto(server.url + "/dashboard/")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Password").press("Enter")
    await page.wait_for_url(server.url + "/dashboard/")


class StaffClient:
    """A staff member's HTTP session without a browser: own cookie jar, forms with their token."""

    def __init__(self, server: LiveServer, *, address: str = "127.0.0.1") -> None:
        """`address`: the loopback address to connect from (any of 127.0.0.0/8), to be another
        client as the server sees it."""
        self.server = server
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(local_addr=(address, 0)),
        )
        self.origin = server.url

    async def get(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.http.get(self.server.url + path, allow_redirects=False, **kw)

    async def csrf(self, path: str = "/dashboard/send") -> str:
        resp = await self.get(path)
        match = CSRF_FIELD.search(await resp.text())
        assert match, f"no form token on {path} ({resp.status})"
        return match.group(1)

    async def post(
        self, path: str, data: dict[str, str], *, origin: str | None = "same", **kw: Any
    ) -> aiohttp.ClientResponse:
        headers = {"Origin": self.origin if origin == "same" else origin} if origin else {}
        return await self.http.post(
            self.server.url + path, data=data, headers=headers, allow_redirects=False, **kw
        )

    async def login(self, username: str = ADMIN, password: str = ADMIN_PASSWORD) -> aiohttp.ClientResponse:
        token = await self.csrf("/dashboard/login")
        return await self.post(
            "/dashboard/login", {"csrf_token": token, "username": username, "password": password}
        )

    def cookie(self) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == "dxn_dashboard":
                return cookie.value
        return None

    async def close(self) -> None:
        await self.http.close()
