"""Redis down, restarted, never there, or refusing the password: the service keeps storing,
answers without a 5xx, logs one warning per outage and one line when it is over, never shows
the password, and once Redis is back its clients get what they missed from the store."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .api_routes import call_every_route
from .cluster_support import MakeService, broker_up, connections_seen, eventually, pair, welcome
from .redis_server import RedisServer, require_redis_server


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


async def _no_5xx(service: Any) -> None:
    """The calls that touch Redis (presence, caps, the rate limits) answer without it."""
    for path in ("/v1/presence", "/v1/users/patient-1/presence", "/readyz", "/v1/push/public-key"):
        resp = await service.client.get(path, headers=service.auth())
        assert resp.status < 500, (path, resp.status, await resp.text())


async def test_every_route_answers_while_redis_is_down(
    make_service: MakeService, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await pair(make_service, redis_server)
    ws = await a.connect("u1", v1=True, since=0)
    await welcome(ws)
    await redis_server.kill()
    for service in (a, b):
        for method, path, status, text in await call_every_route(service):
            assert status < 500, (method, path, status, text)
    # The sends among them were stored: the socket gets them from the store when it resumes.
    stored = await a.client.get("/v1/users/u1/notifications", headers=a.auth())
    assert (await stored.json())["notifications"]
    await ws.close()
    assert not [r for r in caplog.records if r.name.startswith("diagnoxix") and r.levelno >= logging.ERROR]


async def test_redis_killed_and_restarted(
    make_service: MakeService, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="diagnoxix")
    a, b = await pair(make_service, redis_server)
    ws = await a.connect("patient-1", v1=True, since=0)
    await welcome(ws)
    before = await a.send("patient-1", "before")
    assert (await ws.receive_json(timeout=5))["id"] == before["id"]

    await redis_server.kill()
    # Sends are still stored; nothing answers 5xx; a new socket still opens (capped by this
    # process's own count meanwhile).
    missed = [await a.send("patient-1", f"while Redis was down {i}") for i in range(3)]
    await _no_5xx(a)
    other = await b.connect("patient-2")

    async def down() -> bool:
        resp = await a.client.get("/readyz")
        return resp.status == 200 and (await resp.json())["broker"] == "down"

    await eventually(down, what="/readyz reports the broker down")

    await redis_server.start()
    await eventually(lambda: broker_up(a, b), what="both processes back on Redis")
    # The process may have missed events: its v1 clients are told to resume (1013).
    msg = await ws.receive(timeout=10)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1013)
    # Resuming from its cursor, the client gets what it missed, in order, then goes live.
    ws = await a.connect("patient-1", v1=True, since=before["seq"])
    replayed = [await ws.receive_json(timeout=5) for _ in missed]
    assert [f["id"] for f in replayed] == [n["id"] for n in missed]
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    after = await b.send("patient-1", "after the restart")
    assert (await ws.receive_json(timeout=5))["id"] == after["id"]
    # Presence is whole again in Redis: A counts B's socket.

    async def counted() -> bool:
        return await connections_seen(a, "patient-2") == 1

    await eventually(counted, what="B's presence share rewritten after the restart")

    # One warning per process for the outage, one line each when it was over; no traceback.
    assert len(_events(caplog, "broker.down")) == 2
    assert len(_events(caplog, "broker.up")) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await ws.close()
    await other.close()


async def test_a_process_started_without_redis_serves_and_joins_when_redis_comes(
    make_service: MakeService, tmp_path: Path
) -> None:
    require_redis_server()
    redis = RedisServer(tmp_path / "redis")  # not started yet
    try:
        a = await make_service(broker_url=redis.url)
        resp = await a.client.get("/readyz")
        assert (resp.status, (await resp.json())["broker"]) == (200, "down")
        ws = await a.connect("patient-3", v1=True, since=0)
        await welcome(ws)
        missed = await a.send("patient-3", "sent before Redis was there")
        await _no_5xx(a)

        await redis.start()
        b = await make_service(broker_url=redis.url)
        await eventually(lambda: broker_up(a, b), what="A joins once Redis answers")
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1013)
        ws = await a.connect("patient-3", v1=True, since=0)
        assert (await ws.receive_json(timeout=5))["id"] == missed["id"]
        await welcome(ws)
        live = await b.send("patient-3", "through B")
        assert (await ws.receive_json(timeout=5))["id"] == live["id"]
        await ws.close()
    finally:
        redis.stop_now()


async def test_the_password_is_never_logged_or_shown(
    make_service: MakeService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis_server()
    caplog.set_level(logging.DEBUG)
    password = "s3cr3t-Redis-Passw0rd"
    redis = RedisServer(tmp_path / "redis", password=password)
    await redis.start()
    try:
        a = await make_service(broker_url=redis.url)
        wrong = await make_service(broker_url=redis.url.replace(password, "wrong-" + password))
        ws = await a.connect("patient-4")
        await a.send("patient-4")
        bodies = [await (await s.client.get("/readyz")).text() for s in (a, wrong)]
        assert '"broker": "up"' in bodies[0] or '"broker":"up"' in bodies[0]
        assert "down" in bodies[1]  # refused by Redis: served without it
        await redis.kill()
        await a.send("patient-4")
        await eventually(lambda: _down(a), what="A notices the outage")
        bodies.append(await (await a.client.get("/readyz")).text())
        await ws.close()
    finally:
        redis.stop_now()
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "broker.down" in logged
    assert "AuthenticationError" in logged
    for text in (logged, *bodies):
        assert password not in text
        assert f"{redis.port}" not in "".join(bodies)


async def _down(service: Any) -> bool:
    resp = await service.client.get("/readyz")
    body: dict[str, str] = await resp.json()
    return body["broker"] == "down"


async def test_a_process_stops_promptly_while_redis_hangs(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    service = await make_service(broker_url=redis_server.url)
    ws = await service.connect("patient-5")
    redis_server.pause()
    try:
        await service.send("patient-5")  # queued for a Redis that never answers
        started = time.monotonic()
        await service.client.close()
        # A reply timeout (2 s) at most for what is under way, the rest is dropped.
        assert time.monotonic() - started < 5.0
        assert ws.closed or (await ws.receive(timeout=2)).type is aiohttp.WSMsgType.CLOSE
    finally:
        redis_server.resume()
