"""Behind a TLS-ending proxy (docs/deploy.md), what the trusted proxy forwarded is what counts:
the dashboard's cookie is Secure when the browser used https, and the access log names the
client, not the proxy. Anyone else's forwarding headers are not believed.

The proxy here is the test itself, connecting from 127.0.0.1 (the trusted address) and writing
the headers nginx would; an untrusted client connects from 127.0.0.2.
tests/test_deploy_nginx.py checks the same through a real nginx.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .dashboard_support import ADMIN, ADMIN_PASSWORD, LiveServer, start_server

CSRF_FIELD = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
PROXY = "127.0.0.1"
STRANGER = "127.0.0.2"
VIA_TLS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.23"}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    running = await start_server(tmp_path, trusted_proxies=(PROXY,))
    try:
        yield running
    finally:
        await running.close()


def _client(server: LiveServer, address: str) -> aiohttp.ClientSession:
    # The jar keeps and sends Secure cookies over this plain-HTTP hop, as nginx's upstream does.
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[server.url])
    return aiohttp.ClientSession(
        cookie_jar=jar,
        connector=aiohttp.TCPConnector(local_addr=(address, 0)),
        timeout=aiohttp.ClientTimeout(total=10),
    )


def _session_cookie(resp: aiohttp.ClientResponse) -> str:
    cookies = [c for c in resp.headers.getall("Set-Cookie", []) if c.startswith("dxn_dashboard=")]
    assert len(cookies) == 1, resp.headers
    return cookies[0]


async def test_signing_in_through_a_trusted_tls_proxy_sets_a_secure_cookie(server: LiveServer) -> None:
    https_origin = server.url.replace("http://", "https://")
    async with _client(server, PROXY) as http:
        page = await http.get(server.url + "/dashboard/login", headers=VIA_TLS)
        assert page.status == 200
        assert "Secure" in _session_cookie(page)  # the pre-login cookie too
        match = CSRF_FIELD.search(await page.text())
        assert match
        form = {"csrf_token": match.group(1), "username": ADMIN, "password": ADMIN_PASSWORD}
        signed_in = await http.post(
            server.url + "/dashboard/login",
            data=form,
            headers={**VIA_TLS, "Origin": https_origin},
            allow_redirects=False,
        )
        assert signed_in.status == 303, await signed_in.text()
        cookie = _session_cookie(signed_in)
        for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/dashboard/"):
            assert attribute in cookie
        overview = await http.get(server.url + "/dashboard/", headers=VIA_TLS, allow_redirects=False)
        assert overview.status == 200  # the Secure cookie is the signed-in session


async def test_forwarding_headers_from_anyone_else_change_nothing(server: LiveServer) -> None:
    async with _client(server, STRANGER) as http:
        page = await http.get(server.url + "/dashboard/login", headers=VIA_TLS)
        assert page.status == 200
        assert "Secure" not in _session_cookie(page)
    async with _client(server, PROXY) as http:
        # The proxy itself saying the browser used plain http.
        page = await http.get(server.url + "/dashboard/login", headers={"X-Forwarded-Proto": "http"})
        assert "Secure" not in _session_cookie(page)


async def test_the_access_log_names_the_client_a_trusted_proxy_forwarded(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="diagnoxix.access")
    forged = {"X-Forwarded-For": "203.0.113.66"}
    async with _client(server, PROXY) as http:
        assert (await http.get(server.url + "/healthz", headers=VIA_TLS)).status == 200
    async with _client(server, STRANGER) as http:
        assert (await http.get(server.url + "/v1/ws/stats", headers=forged)).status == 200
    remotes = {
        record.__dict__["path"]: record.__dict__["remote"]
        for record in caplog.records
        if record.name == "diagnoxix.access"
    }
    assert remotes == {"/healthz": "198.51.100.23", "/v1/ws/stats": STRANGER}
