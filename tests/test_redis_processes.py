"""Two real `run.py` processes on one Redis (a password-protected one): a socket on one gets what
the other's API stored, each counts the other's connections, neither ever prints the password,
and a process killed with -9 stops counting within the bound docs/scaling.md promises."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from diagnoxix.delivery.redis_presence import PRESENCE_TTL_SECONDS

from .processes import Launcher, child_env, create_api_key, free_port
from .redis_server import RedisServer, require_redis_server

SECRET_KEY = "two-processes-secret-" + "z" * 40
PASSWORD = "Redis-Passw0rd-never-shown"


async def _presence(http: aiohttp.ClientSession, url: str, key: str, user_id: str) -> int:
    async with http.get(
        f"{url}/v1/users/{user_id}/presence", headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return int((await resp.json())["connections"])


async def test_two_processes_share_one_redis(launcher: Launcher, tmp_path: Path) -> None:
    require_redis_server()
    redis = RedisServer(tmp_path / "redis", password=PASSWORD)
    await redis.start()
    try:
        env = child_env(DIAGNOXIX_BROKER=redis.url, DIAGNOXIX_SECRET_KEY=SECRET_KEY)
        # One with the variable, one with the flag.
        a = await launcher.start(tmp_path / "a.sqlite3", env=env)
        b_db, port = tmp_path / "b.sqlite3", free_port()
        b = await launcher.start(
            b_db,
            env=child_env(DIAGNOXIX_SECRET_KEY=SECRET_KEY),
            argv=["--host", "127.0.0.1", "--port", str(port), "--db", str(b_db), "--broker", redis.url],
            port=port,
        )
        (_, key_a), (_, key_b) = await asyncio.gather(create_api_key(a.db), create_api_key(b.db))
        auth_b = {"Authorization": f"Bearer {key_b}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(f"{b.url}/v1/tokens", json={"user_id": "patient-1"}, headers=auth_b) as resp:
                token = (await resp.json())["token"]
            # A socket on A; notifications sent through B's API.
            async with http.ws_connect(f"{a.ws_url}?token={token}&since=0", protocols=["diagnoxix.v1"]) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "welcome"
                sent = []
                for i in range(3):
                    body = {"user_id": "patient-1", "title": f"Lab result {i}"}
                    async with http.post(f"{b.url}/v1/notifications", json=body, headers=auth_b) as resp:
                        assert resp.status == 201, await resp.text()
                        sent.append((await resp.json())["notification"])
                got = [await ws.receive_json(timeout=5) for _ in sent]
                assert [(f["id"], f["seq"]) for f in got] == [(n["id"], n["seq"]) for n in sent]
                # B counts A's socket.
                await _until(lambda: _presence(http, b.url, key_b, "patient-1"), 1)
            for server in (a, b):
                async with http.get(f"{server.url}/readyz") as resp:
                    assert await resp.json() == {"status": "ready", "broker": "up"}

            # A socket on B, then B is killed -9: A stops counting it within the TTL.
            async with http.ws_connect(f"{b.ws_url}?token={token}") as on_b:
                await _until(lambda: _presence(http, a.url, key_a, "patient-1"), 1)
                await b.crash()
                killed_at = time.monotonic()
                await _until(lambda: _presence(http, a.url, key_a, "patient-1"), 0, PRESENCE_TTL_SECONDS + 5)
                # Its share expires PRESENCE_TTL_SECONDS after its last heartbeat (a little
                # polling and a loaded machine on top).
                assert time.monotonic() - killed_at <= PRESENCE_TTL_SECONDS + 4
                await on_b.close()
        await a.terminate()
    finally:
        redis.stop_now()
    for server in (a, b):
        log = server.stderr() + server.stdout()
        assert PASSWORD not in log
        starts = [json.loads(line) for line in server.stderr().splitlines() if '"server.start"' in line]
        assert starts[0]["broker"] == f"redis://127.0.0.1:{redis.port}/0"


async def _until(read: Callable[[], Awaitable[int]], wanted: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = await read()
        if got == wanted:
            return
        assert time.monotonic() < deadline, f"presence {got}, not {wanted}, after {timeout} s"
        await asyncio.sleep(0.1)
