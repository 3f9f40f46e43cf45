"""Raw HTTP for hostile-input tests: bytes no client library would send, and the server's log.

The server runs as its own process (`processes.Launcher`, JSON log lines on stderr).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from .processes import RUN_PY, Launcher, Server, child_env, create_api_key

WS_UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
ADMIN, ADMIN_PASSWORD = "alice", "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


async def exchange(server: Server, request: bytes) -> tuple[int, bytes, bytes]:
    """Send raw bytes (what no well-behaved client library would send); (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def raw_request(
    server: Server, method: str, target: bytes, headers: bytes = b"", body: bytes | None = None
) -> bytes:
    head = method.encode() + b" " + target + b" HTTP/1.1\r\n"
    head += f"Host: 127.0.0.1:{server.port}\r\n".encode() + headers
    if body is not None:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"Connection: close\r\n\r\n" + (body or b"")


def log_entries(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]


def log_errors(server: Server) -> list[str]:
    """Log lines at error level or with a traceback: event and the exception's last line."""
    found = []
    for entry in log_entries(server):
        if entry.get("level") in {"error", "critical"} or "exception" in entry:
            last = entry.get("exception", "").strip().splitlines()[-1:] or [""]
            found.append(f"{entry.get('level')} {entry.get('event')} {entry.get('path', '')}: {last[0]}")
    return found


async def settle() -> None:
    await asyncio.sleep(0.3)  # the log line of the request just answered is written


def assert_json_error(status: int, head: bytes, body: bytes, expected: set[int]) -> None:
    assert status in expected, (status, body[:300])
    assert b"application/json" in head.lower(), head
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "details"}, error


def add_admin(db: Path, env: dict[str, str] | None = None) -> None:
    """A dashboard admin (ADMIN, ADMIN_PASSWORD) made by the real CLI."""
    done = subprocess.run(
        [sys.executable, str(RUN_PY), "admin", "create", ADMIN, "--password-stdin", "--db", str(db)],
        input=ADMIN_PASSWORD + "\n",
        env=env if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def mint_token(server: Server, key: str, user_id: str = "u1") -> dict[str, Any]:
    """A connection token minted through the API (`POST /v1/tokens`): the answer's fields."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/v1/tokens",
            json={"user_id": user_id, "ttl": 600},
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def start_with_key(launcher: Launcher, tmp_path: Path, **env: str) -> tuple[Server, str]:
    """A server (`run.py`, its own SQLite file, `env` set) and an API key made for it."""
    db = tmp_path / "notify.sqlite3"
    server = await launcher.start(db, env=child_env(**env))
    _, key = await create_api_key(db, "fuzz")
    return server, key


async def sign_in(
    http: aiohttp.ClientSession,
    server: Server,
    username: str = ADMIN,
    password: str = ADMIN_PASSWORD,
    *,
    expect: int = 303,
) -> None:
    """Sign in on `http` (a session with an unsafe cookie jar: the server is an address) as
    ADMIN, or try to as `username` with `password`; the answer must be `expect`."""
    async with http.get(f"{server.url}/dashboard/login") as page:
        match = CSRF_FIELD.search(await page.text())
        assert match
    async with http.post(
        f"{server.url}/dashboard/login",
        data={"csrf_token": match.group(1), "username": username, "password": password},
        headers={"Origin": server.url},
        allow_redirects=False,
    ) as resp:
        assert resp.status == expect, resp.status
