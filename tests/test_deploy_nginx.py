"""The deployment of docs/deploy.md, for real: Debian's nginx with `deploy/nginx/diagnoxix.conf`
(only its ports, certificate and log paths rewritten for a throwaway instance on loopback) and a
self-signed certificate, in front of a real `run.py` process that trusts it as its proxy.

nginx runs in the foreground (`daemon off`) with its own prefix, configuration, pid and log files
under the test's temp directory; each test starts it and stops it by PID. The clinic's patient
portal is a static page on another https site of the same nginx, as a clinic would host it.
Clients that must look like distinct people connect from other loopback addresses (127.0.0.2...),
which Linux routes to loopback without any setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from .dashboard_support import ADMIN, ADMIN_PASSWORD
from .processes import REPO_ROOT, RUN_PY, Launcher, Server, child_env, create_api_key, free_port
from .sse_client import SseReader
from .tls_certs import make_certificate

NGINX = Path("/usr/sbin/nginx")
SITE = REPO_ROOT / "deploy" / "nginx" / "diagnoxix.conf"
START_DEADLINE_SECONDS = 10.0

pytestmark = pytest.mark.skipif(not NGINX.exists(), reason="nginx is not installed (apt-get install nginx)")

PORTAL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Patient portal</title></head>
<body>
<ul id="inbox"></ul>
<script src="{notify}/static/js/diagnoxix-notify.js"></script>
<script>
  const params = new URLSearchParams(location.hash.slice(1));
  window.received = [];
  window.notify = DiagnoxixNotify.connect({{
    url: "{notify_ws}/v1/ws/notifications",
    token: params.get("token"),
  }});
  notify.on("notification", (n) => {{
    received.push(n);
    const li = document.createElement("li");
    li.textContent = n.title;
    document.getElementById("inbox").appendChild(li);
  }});
</script>
</body></html>
"""


def render_site(*, backend: int, http: int, https: int, cert: Path, key: Path, logs: Path) -> str:
    """deploy/nginx/diagnoxix.conf with loopback ports and the test's files; nothing else changes."""
    text = SITE.read_text(encoding="utf-8")
    replacements = [
        ("listen 80;", f"listen 127.0.0.1:{http};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https} ssl;"),
        ("listen [::]:443 ssl;", ""),
        ("server 127.0.0.1:7556;", f"server 127.0.0.1:{backend};"),
        ("/etc/letsencrypt/live/notify.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/notify.example.org/privkey.pem", str(key)),
        ("/var/log/nginx/", f"{logs}/"),
    ]
    for old, new in replacements:
        assert old in text, f"{SITE.name} no longer contains {old!r}: update render_site to match"
        text = text.replace(old, new)
    return text


def _main_conf(directory: Path, site: Path, portal_port: int, cert: Path, key: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf is to the site file, for one throwaway instance."""
    # Workers run as the user running the test: the temp directory is private to it.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    temp = directory / "temp"
    return f"""{user}
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/logs/error.log;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    access_log {directory}/logs/access.log;
    types {{ text/html html; }}
    include {site};
    # The clinic's patient portal, another site of the same nginx.
    server {{
        listen 127.0.0.1:{portal_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {directory}/portal;
    }}
}}
"""


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    directory: Path
    http_port: int
    https_port: int
    portal_port: int

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def portal_origin(self) -> str:
        return f"https://127.0.0.1:{self.portal_port}"

    def log(self, name: str) -> str:
        path = self.directory / "logs" / name
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: sockets included
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_nginx(directory: Path, backend: int, cert: Path, key: Path, portal_html: str | None) -> Nginx:
    for sub in ("logs", "temp", "portal"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    http, https, portal = free_port(), free_port(), free_port()
    site = directory / "diagnoxix.conf"
    site.write_text(
        render_site(backend=backend, http=http, https=https, cert=cert, key=key, logs=directory / "logs")
    )
    (directory / "nginx.conf").write_text(_main_conf(directory, site, portal, cert, key))
    if portal_html is not None:
        (directory / "portal" / "index.html").write_text(
            portal_html.format(notify=f"https://127.0.0.1:{https}", notify_ws=f"wss://127.0.0.1:{https}")
        )
    args = [str(NGINX), "-p", str(directory), "-c", str(directory / "nginx.conf")]
    args += ["-e", str(directory / "logs" / "error.log"), "-g", "daemon off;"]
    stderr = (directory / "logs" / "stderr.log").open("wb")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    stderr.close()
    return Nginx(proc, directory, http, https, portal)


@dataclass
class Stack:
    nginx: Nginx
    server: Server
    tls: ssl.SSLContext  # trusts the test's certificate, and checks it

    def url(self, path: str) -> str:
        return self.nginx.origin + path

    def client(self, address: str = "127.0.0.1") -> aiohttp.ClientSession:
        """An HTTPS client connecting from `address` (any of 127.0.0.0/8)."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(address, 0), ssl=self.tls),
            timeout=aiohttp.ClientTimeout(total=10),
        )

    def access_log(self) -> list[dict[str, Any]]:
        """The service's own access log lines (JSON on its stderr)."""
        lines = [json.loads(line) for line in self.server.stderr().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "http.request"]


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def start_stack(launcher: Launcher, tmp_path: Path) -> AsyncIterator[StartStack]:
    started: list[Nginx] = []

    async def start(*, portal_html: str | None = None, **env: str) -> Stack:
        backend = free_port()
        cert, key = make_certificate(tmp_path)
        nginx = start_nginx(tmp_path / "nginx", backend, cert, key, portal_html)
        started.append(nginx)
        environment = child_env(
            DIAGNOXIX_TRUSTED_PROXIES="127.0.0.1", DIAGNOXIX_ALLOWED_ORIGINS=nginx.portal_origin, **env
        )
        server = await launcher.start(tmp_path / "notify.sqlite3", env=environment, port=backend)
        stack = Stack(nginx, server, ssl.create_default_context(cafile=str(cert)))
        await _wait_through_nginx(stack)
        return stack

    try:
        yield start
    finally:
        for nginx in started:
            nginx.stop()


async def _wait_through_nginx(stack: Stack) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    async with stack.client() as http:
        while True:
            if stack.nginx.proc.poll() is not None:
                pytest.fail(
                    f"nginx exited with {stack.nginx.proc.returncode}:\n{stack.nginx.log('stderr.log')}"
                )
            try:
                async with http.get(stack.url("/healthz")) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"nginx not serving after {START_DEADLINE_SECONDS} s:\n{stack.nginx.log('error.log')}"
                )
            await asyncio.sleep(0.05)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for what a server writes after its response (access logs); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout} s: {condition.__name__}")
        await asyncio.sleep(0.05)


async def test_browser_sdk_over_wss_receives_a_notification_sent_over_https(
    start_stack: StartStack, browser: Browser
) -> None:
    stack = await start_stack(portal_html=PORTAL_PAGE)
    _, key = await create_api_key(stack.server.db)
    auth = {"Authorization": f"Bearer {key}"}
    async with stack.client() as http:
        # The portal's backend mints the patient's token through the proxy.
        async with http.post(stack.url("/v1/tokens"), json={"user_id": "patient-1"}, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            token = (await resp.json())["token"]
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        await page.goto(f"{stack.nginx.portal_origin}/index.html#token={token}")
        assert page.url.startswith("https://")
        await page.wait_for_function("window.notify && window.notify.state === 'open'", timeout=10_000)
        body = {"user_id": "patient-1", "title": "Lab Result Ready", "message": "Please check the portal."}
        async with http.post(stack.url("/v1/notifications"), json=body, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            sent = (await resp.json())["notification"]
        await page.wait_for_function("window.received.length === 1", timeout=10_000)
        received = await page.evaluate("window.received")
        assert [(n["id"], n["title"]) for n in received] == [(sent["id"], "Lab Result Ready")]
        await context.close()

    # nginx upgraded the socket (101; logged once the socket has closed), and the SDK put its
    # token in no URL.
    def sockets() -> list[str]:
        return [line for line in stack.nginx.log("diagnoxix.access.log").splitlines() if "/v1/ws/" in line]

    await eventually(lambda: bool(sockets()))
    assert all('"GET /v1/ws/notifications HTTP/1.1" 101' in line for line in sockets())
    assert token not in stack.nginx.log("diagnoxix.access.log") + stack.server.stderr()


async def test_the_dashboard_cookie_is_secure_and_the_live_socket_works_through_nginx(
    start_stack: StartStack, browser: Browser
) -> None:
    stack = await start_stack()
    command = [sys.executable, str(RUN_PY), "admin", "create", ADMIN, "--password-stdin"]
    created = await asyncio.to_thread(
        subprocess.run,
        [*command, "--db", str(stack.server.db)],
        input=ADMIN_PASSWORD, capture_output=True, text=True, timeout=30, check=False, cwd=REPO_ROOT,
        env=child_env(),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await page.goto(stack.url("/dashboard/"))
    await page.get_by_label("Username").fill(ADMIN)
    await page.get_by_label("Password").fill(ADMIN_PASSWORD)
    await page.get_by_label("Password").press("Enter")
    await page.wait_for_url(stack.url("/dashboard/"))
    cookies = [c for c in await context.cookies() if c["name"] == "dxn_dashboard"]
    assert len(cookies) == 1
    assert cookies[0]["secure"] is True
    assert cookies[0]["httpOnly"] is True
    assert cookies[0]["sameSite"] == "Strict"
    # The overview's live figures come over wss:// through nginx.
    await expect(page.locator("[data-live-state]")).to_have_text("live", timeout=10_000)
    await context.close()


async def test_client_addresses_come_from_the_proxy_alone(start_stack: StartStack) -> None:
    per_second = 5
    stack = await start_stack(DIAGNOXIX_RATE_LIMIT=str(per_second))
    direct = f"http://127.0.0.1:{stack.server.port}/v1/ws/stats"

    async def burst(http: aiohttp.ClientSession, url: str) -> list[int]:
        statuses = []
        for i in range(2 * per_second):
            # A fresh lie each time: were it believed, no address would ever reach the limit.
            forged = {"X-Forwarded-For": f"10.66.0.{i}", "X-Real-IP": f"10.77.0.{i}"}
            async with http.get(url, headers=forged) as resp:
                statuses.append(resp.status)
        return statuses

    async with stack.client("127.0.0.2") as patient, stack.client("127.0.0.3") as neighbour:
        statuses = await burst(patient, stack.url("/v1/ws/stats"))
        assert statuses[:per_second] == [200] * per_second
        assert 429 in statuses[per_second:]  # limited under its own address...
        async with neighbour.get(stack.url("/v1/ws/stats")) as resp:
            assert resp.status == 200  # ...not under the proxy's, which everyone shares
    async with stack.client("127.0.0.4") as sneaky:
        # Straight to the service, past nginx: its forwarding headers are not believed either.
        statuses = await burst(sneaky, direct)
        assert statuses[:per_second] == [200] * per_second
        assert 429 in statuses[per_second:]

    def remotes() -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in stack.access_log():
            if line["path"] == "/v1/ws/stats":
                counts[line["remote"]] = counts.get(line["remote"], 0) + 1
        return counts

    expected = {"127.0.0.2": 2 * per_second, "127.0.0.3": 1, "127.0.0.4": 2 * per_second}
    await eventually(lambda: sum(remotes().values()) >= sum(expected.values()))
    assert remotes() == expected
    assert "10.66.0." not in stack.server.stderr()
    assert "10.77.0." not in stack.server.stderr()
    nginx_log = stack.nginx.log("diagnoxix.access.log").splitlines()
    assert {line.split()[0] for line in nginx_log if "/v1/ws/stats" in line} == {"127.0.0.2", "127.0.0.3"}


async def test_plain_http_redirects_metrics_stay_inside_and_no_log_keeps_a_query_string(
    start_stack: StartStack,
) -> None:
    stack = await start_stack()
    plain = f"http://127.0.0.1:{stack.nginx.http_port}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(plain + "/dashboard/?next=x", allow_redirects=False) as resp,
    ):
        assert resp.status == 301
        assert resp.headers["Location"] == "https://127.0.0.1/dashboard/?next=x"
    secret = "eyJsZWFrZWQtdG9rZW4ifQ"
    async with (
        stack.client() as https,
        https.get(stack.url(f"/v1/users/patient-1/unread-count?token={secret}")) as resp,
    ):
        assert resp.status == 401
        assert resp.headers["Strict-Transport-Security"] == "max-age=63072000"
    async with stack.client() as https, https.get(stack.url("/metrics")) as resp:
        assert resp.status == 403  # the public site keeps the metrics to itself...
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{stack.server.port}/metrics") as resp,
    ):
        assert resp.status == 200  # ...which a scraper on the host reads from the service's port
    path = "/v1/users/patient-1/unread-count"
    await eventually(
        lambda: path in stack.nginx.log("diagnoxix.access.log") and path in stack.server.stderr()
    )
    logs = stack.nginx.log("diagnoxix.access.log")
    for text in (logs, stack.nginx.log("diagnoxix.error.log"), stack.server.stderr()):
        assert secret not in text


async def test_the_sse_fallback_through_nginx_passes_each_event_at_once_and_no_log_keeps_its_token(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(DIAGNOXIX_SSE_HEARTBEAT="1")
    _, key = await create_api_key(stack.server.db)
    auth = {"Authorization": f"Bearer {key}"}
    async with stack.client() as http:
        async with http.post(stack.url("/v1/tokens"), json={"user_id": "patient-9"}, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            token = (await resp.json())["token"]
        async with http.get(stack.url(f"/v1/sse/notifications?token={token}")) as stream:
            assert stream.status == 200
            sse = SseReader(stream)
            # A buffering proxy would hold these small events back until its buffer filled.
            await sse.frames_until("welcome", timeout=5)
            body = {"user_id": "patient-9", "title": "Lab Result Ready", "message": "Please check."}
            async with http.post(stack.url("/v1/notifications"), json=body, headers=auth) as resp:
                assert resp.status == 201, await resp.text()
                sent = (await resp.json())["notification"]
            (event,) = await sse.notifications(1, timeout=3)
            assert (event.id, event.frame()["id"]) == (str(sent["seq"]), sent["id"])
            with contextlib.suppress(TimeoutError):
                await sse.next_event(timeout=2.5)
            assert sse.comments, "no heartbeat came through nginx"
    await eventually(lambda: "/v1/sse/notifications" in stack.nginx.log("diagnoxix.access.log"))
    assert token not in stack.nginx.log("diagnoxix.access.log") + stack.server.stderr()
