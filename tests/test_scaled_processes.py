"""Two real `run.py` processes on one PostgreSQL database and one Redis: a client on A gets what
was sent through B; A killed with -9, the client resumes on B with nothing lost or doubled; unread
counts and revocations cross; `--workers 2` serves one port from two processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .pg_server import PgCluster
from .processes import REPO_ROOT, RUN_PY, Launcher, Server, child_env, free_port, last_line, run_cli
from .redis_server import RedisServer

SECRET_KEY = "scaled-processes-secret-" + "z" * 40
V1 = ["diagnoxix.v1"]


@pytest.fixture
def dsn(pg_cluster: PgCluster) -> str:
    return pg_cluster.dsn(pg_cluster.create_database())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


def _env(dsn: str, redis: RedisServer) -> dict[str, str]:
    return child_env(DIAGNOXIX_STORE=dsn, DIAGNOXIX_BROKER=redis.url, DIAGNOXIX_SECRET_KEY=SECRET_KEY)


async def _two(launcher: Launcher, tmp_path: Path, dsn: str, redis: RedisServer) -> tuple[Server, Server]:
    env = _env(dsn, redis)
    a = await launcher.start(tmp_path / "unused-a.sqlite3", env=env)
    b = await launcher.start(tmp_path / "unused-b.sqlite3", env=env)
    return a, b


async def _api_key(dsn: str) -> str:
    done = await run_cli("apikey", "create", "lab-system", "--store", dsn)
    assert done.returncode == 0, done.stderr
    return last_line(done.stdout)


async def _token(http: aiohttp.ClientSession, url: str, key: str, user_id: str) -> dict[str, Any]:
    async with http.post(
        f"{url}/v1/tokens", json={"user_id": user_id}, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def _send(http: aiohttp.ClientSession, url: str, key: str, user_id: str, title: str) -> dict[str, Any]:
    body = {"user_id": user_id, "title": title, "message": "Your result is ready"}
    async with http.post(
        f"{url}/v1/notifications", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict((await resp.json())["notification"])


async def _notifications(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await ws.receive_json(timeout=10)
        if "seq" in frame and frame.get("type") not in ("welcome", "unread", "ack", "pong"):
            got.append(frame)
    return got


async def _until_welcome(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    before: list[dict[str, Any]] = []
    while (frame := await ws.receive_json(timeout=10)).get("type") != "welcome":
        before.append(frame)
    return before, frame


async def _frames_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frames.append(await ws.receive_json())
    return frames


async def test_a_client_resumes_on_b_after_a_is_killed_with_nothing_lost_or_doubled(
    launcher: Launcher, tmp_path: Path, dsn: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    a, b = await _two(launcher, tmp_path, dsn, redis_server)
    key = await _api_key(dsn)
    token = (await _token(http, b.url, key, "patient-7"))["token"]
    async with http.ws_connect(f"{a.ws_url}?token={token}&since=0", protocols=V1) as ws:
        welcome = await ws.receive_json(timeout=10)
        assert welcome["type"] == "welcome"
        # Sent through B (and one through A), received live on A, in seq order.
        sent = [await _send(http, b.url, key, "patient-7", f"Result {i}") for i in range(3)]
        sent.append(await _send(http, a.url, key, "patient-7", "Result 3"))
        live = await _notifications(ws, 4)
        assert [(n["id"], n["seq"]) for n in live] == [(n["id"], n["seq"]) for n in sent]
        cursor = live[-1]["seq"]
        # A dies without a goodbye; B stores what is sent meanwhile.
        await a.crash()
    missed = [await _send(http, b.url, key, "patient-7", f"While away {i}") for i in range(3)]
    async with http.ws_connect(
        f"{b.ws_url}?token={token}&since={cursor}&epoch={welcome['epoch']}", protocols=V1
    ) as ws:
        # The backlog first, then the welcome that says it was complete.
        resumed, welcome_b = await _until_welcome(ws)
        assert welcome_b["recovered"] is True
        assert welcome_b["epoch"] == welcome["epoch"]
        assert welcome_b["replayed"] == 3
        assert [(n["id"], n["seq"]) for n in resumed] == [(n["id"], n["seq"]) for n in missed]
        later = await _send(http, b.url, key, "patient-7", "After")
        (live_b,) = await _notifications(ws, 1)
        assert live_b["id"] == later["id"]
        # Nothing more: no duplicate of anything already received.
        extra = await _frames_within(ws, 1.0)
        assert [f for f in extra if "seq" in f and f.get("type") != "unread"] == []
    await b.terminate()


async def test_unread_counts_and_revocations_cross_processes(
    launcher: Launcher, tmp_path: Path, dsn: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    a, b = await _two(launcher, tmp_path, dsn, redis_server)
    key = await _api_key(dsn)
    minted = await _token(http, a.url, key, "patient-8")
    auth = {"Authorization": f"Bearer {key}"}
    async with http.ws_connect(f"{a.ws_url}?token={minted['token']}&since=0", protocols=V1) as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        note = await _send(http, b.url, key, "patient-8", "Appointment confirmed")
        (live,) = await _notifications(ws, 1)
        assert live["id"] == note["id"]
        # Read through B: A's socket hears the new unread count.
        async with http.post(
            f"{b.url}/v1/users/patient-8/notifications/read", json={"ids": [note["id"]]}, headers=auth
        ) as resp:
            assert resp.status == 200, await resp.text()
        async with asyncio.timeout(10):
            while True:
                frame = await ws.receive_json()
                if frame.get("type") == "unread":
                    assert frame["count"] == 0
                    break
        # The device revoked through B: A closes its socket with 4003, and refuses the token.
        device = f"{b.url}/v1/users/patient-8/devices/{minted['token_id']}"
        async with http.delete(device, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
        async with asyncio.timeout(10):
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 4003
    async with http.get(
        f"{a.url}/v1/users/patient-8/unread-count", headers={"Authorization": f"Bearer {minted['token']}"}
    ) as resp:
        assert resp.status == 401
    await a.terminate()
    await b.terminate()


async def test_two_workers_share_one_port(
    tmp_path: Path, dsn: str, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    env = _env(dsn, redis_server)
    err = (tmp_path / "workers.stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), "--port", str(port), "--workers", "2"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
        start_new_session=True,
    )
    try:
        key = await _api_key(dsn)
        url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(30):
            while True:
                try:
                    async with http.get(f"{url}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        # Each connection may land on either worker; all of them deliver and store.
        token = (await _token(http, url, key, "patient-9"))["token"]
        sockets = [
            await http.ws_connect(f"{url}/v1/ws/notifications?token={token}&since=0", protocols=V1)
            for _ in range(6)
        ]
        for ws in sockets:
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        note = await _send(http, url, key, "patient-9", "Prescription ready")
        for ws in sockets:
            (live,) = await _notifications(ws, 1)
            assert live["id"] == note["id"]
            await ws.close()
        # The supervisor runs two workers: its own children.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
        err.close()
    log = (tmp_path / "workers.stderr").read_text()
    assert code == 0, log
    assert "workers.stop" in log
    assert "Traceback" not in log


async def test_workers_that_cannot_start_are_retried_and_a_stop_is_not_held_up(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A database that is not there yet: each worker exits at start and is started again later
    and later; a stop signal meanwhile ends the supervisor at once, not after the wait."""
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    stderr = tmp_path / "workers.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), "--port", str(free_port()), "--workers", "2"],
            cwd=REPO_ROOT,
            env=_env(nowhere, redis_server),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:

        def waits() -> list[float]:
            lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
            return [line["restart_in"] for line in lines if line.get("event") == "workers.died"]

        async with asyncio.timeout(40):
            while max(waits(), default=0.0) < 4.0:
                await asyncio.sleep(0.1)
        # Both slots died and each waits longer after each death (1 s, 2 s, 4 s, ...).
        assert sorted(set(waits()))[:3] == [1.0, 2.0, 4.0]
        stopping = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        assert time.monotonic() - stopping < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = stderr.read_text()
    # 1 when a worker was failing its start as the signal came; never killed for want of stopping.
    assert code in (0, 1), log
    assert "workers.stop" in log
    assert "Traceback" not in log
