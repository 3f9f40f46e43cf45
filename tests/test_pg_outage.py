"""PostgreSQL crashes and comes back under a running process: sends answer 503 with the JSON
error shape while it is gone (never another 5xx, never a traceback), `/readyz` says so, and once
it is back the same process stores and delivers again by itself, with nothing stored lost or
doubled for a client that resumes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diagnoxix.keys import API_KEYS

from .api_routes import call_every_route
from .cluster_support import MakeService, eventually, welcome
from .dashboard_support import StaffClient, start_server
from .pg_server import PgCluster, server_bin, skip_or_fail
from .redis_server import RedisServer
from .test_dashboard_security import PAGES


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this test's own: crashing the session's would take every other test's."""
    bindir = server_bin()
    if bindir is None:
        skip_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
        raise AssertionError("unreachable")
    cluster = PgCluster(bindir, durable=True)
    try:
        cluster.start()
        cluster.create_empty_database("notify")
        yield cluster
    finally:
        cluster.stop()


async def _post(service: Any, user_id: str, title: str) -> tuple[int, dict[str, Any]]:
    body = {"user_id": user_id, "title": title, "message": "msg"}
    resp = await service.client.post("/v1/notifications", json=body, headers=service.auth())
    return resp.status, await resp.json()


async def _stores_again(*services: Any, timeout: float, what: str) -> list[dict[str, Any]]:
    """Send through each service in turn (503 meanwhile, never anything else) until every one
    stores; the notifications stored, in the order sent."""
    stored: list[dict[str, Any]] = []

    async def all_store() -> bool:
        for service in services:
            status, body = await _post(service, "patient-1", f"after the outage {len(stored)}")
            assert status in (201, 503), body
            if status != 201:
                return False
            stored.append(body["notification"])
        return True

    await eventually(all_store, timeout=timeout, what=what)
    return stored


async def _received_once_in_order(ws: aiohttp.ClientWebSocketResponse, stored: list[dict[str, Any]]) -> None:
    frames = [await ws.receive_json(timeout=5) for _ in stored]
    assert [f["id"] for f in frames] == [n["id"] for n in stored]


async def _resumes_with(service: Any, since: int, stored: list[dict[str, Any]]) -> None:
    """A fresh socket resuming from `since` gets exactly `stored`, once, and says it recovered."""
    resumed = await service.connect("patient-1", v1=True, since=since)
    await _received_once_in_order(resumed, stored)
    assert (await welcome(resumed))["recovered"] is True
    await resumed.close()


def _one_outage_logged(caplog: pytest.LogCaptureFixture) -> None:
    """One warning when the database went and one line when it was back, not one per failed
    write; no error and no traceback of ours."""
    ours = [r for r in caplog.records if r.name.startswith("diagnoxix")]
    events = [r.getMessage() for r in ours]
    assert events.count("store.database.down") == 1
    assert events.count("store.database.up") == 1
    assert not [r for r in ours if r.levelno >= logging.ERROR or r.exc_info]


async def _every_route_answers_without_a_500(service: Any) -> None:
    """While the database is gone: every documented route answers, a 503 with the JSON error
    shape where it needed the database; a socket is refused with a close code that says to come
    back later, never 1011."""
    for method, path, status, text in await call_every_route(service):
        assert status < 500 or status == 503, (method, path, status, text)
        if status == 503 and path != "/metrics":
            assert set(json.loads(text)["error"]) == {"code", "message", "details"}, (method, path, text)
    ws = await service.connect("patient-2", v1=True, since=0)
    msg = await ws.receive(timeout=10)
    if msg.type == aiohttp.WSMsgType.TEXT:  # let in: it must still be whole
        assert json.loads(msg.data)["type"] == "welcome", msg.data
        await ws.close()
    else:
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1013), msg
    sse = await service.client.get(f"/v1/sse/notifications?token={service.token('patient-2')}&since=0")
    assert sse.status in (200, 503), (sse.status, await sse.text())
    sse.close()


async def test_postgresql_crashes_and_comes_back(
    make_service: MakeService, own_cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="diagnoxix")
    service = await make_service(store_url=own_cluster.dsn("notify"))
    ws = await service.connect("patient-1", v1=True, since=0)
    await welcome(ws)
    before = await service.send("patient-1", "before")
    assert (await ws.receive_json(timeout=5))["id"] == before["id"]

    own_cluster.crash()
    body = {"user_id": "patient-1", "title": "while PostgreSQL is down", "message": "msg"}
    resp = await service.client.post("/v1/notifications", json=body, headers=service.auth())
    assert resp.headers["Retry-After"] == "5"
    status, body = resp.status, await resp.json()
    assert status == 503, body
    assert set(body["error"]) == {"code", "message", "details"}
    ready = await service.client.get("/readyz")
    assert ready.status == 503, await ready.text()
    await _every_route_answers_without_a_500(service)

    own_cluster.restart()
    stored = await _stores_again(service, timeout=20, what="the process stores again once PostgreSQL is back")

    async def ready_again() -> bool:
        # Unready for a few seconds after the last failed commit, by design (`ops.readiness`).
        return (await service.client.get("/readyz")).status == 200

    await eventually(ready_again, timeout=10, what="/readyz ready once the store commits again")
    # The socket opened before the crash got what was stored after it, live; a fresh one
    # resuming from the same cursor gets the same, once.
    await _received_once_in_order(ws, stored)
    await _resumes_with(service, before["seq"], stored)
    await ws.close()
    _one_outage_logged(caplog)


async def test_the_dashboard_says_the_database_is_gone_without_a_500(
    own_cluster: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = await start_server(tmp_path, store_url=own_cluster.dsn("notify"))
    staff = StaffClient(live)
    try:
        assert (await staff.login()).status == 303
        pages = [*PAGES, "/dashboard/critical", "/dashboard/groups", "/dashboard/webhooks"]
        pages += ["/dashboard/templates", "/dashboard/users/patient-1"]
        for page in pages:
            assert (await staff.get(page)).status == 200, page
        own_cluster.crash()
        for page in pages:
            resp = await staff.get(page)
            assert resp.status == 503, (page, resp.status)
            assert resp.headers["Content-Type"].startswith("text/html"), page
            assert "The database is not answering" in await resp.text(), page
        own_cluster.restart()

        async def back() -> bool:
            return (await staff.get("/dashboard/")).status == 200

        # Still signed in: the session outlived the outage.
        await eventually(back, timeout=20, what="the dashboard answers once PostgreSQL is back")
    finally:
        await staff.close()
        await live.close()
    assert not [r for r in caplog.records if r.name.startswith("diagnoxix") and r.levelno >= logging.ERROR]


async def test_the_dashboards_live_socket_carries_on_across_an_outage(
    own_cluster: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = await start_server(tmp_path, store_url=own_cluster.dsn("notify"))
    staff = StaffClient(live)
    try:
        assert (await staff.login()).status == 303
        _, key = await live.app[API_KEYS].create("clinic")
        body = {"user_id": "patient-1", "title": "Result", "message": "m"}
        async with staff.http.post(
            live.url + "/v1/notifications", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            note = (await resp.json())["notification"]
        sock = await staff.http.ws_connect(live.url + "/dashboard/live", headers={"Origin": live.url})
        await sock.send_json({"type": "watch", "id": note["id"]})

        async def watched() -> bool:
            return "watch" in await sock.receive_json(timeout=5)

        await eventually(watched, what="a snapshot with the watched notification")
        own_cluster.crash()
        # A few pushes meet the database gone and send nothing. What was sent before the crash is
        # read and dropped: only a snapshot sent after the restart may pass below.
        with contextlib.suppress(TimeoutError):
            while True:
                await sock.receive_json(timeout=2.5)
        own_cluster.restart()
        # The socket is still open and, once the database is back, says where it is again.
        await eventually(watched, timeout=30, what="the watched notification once PostgreSQL is back")
        await sock.close()
    finally:
        await staff.close()
        await live.close()
    assert not [r for r in caplog.records if r.name.startswith("diagnoxix") and r.levelno >= logging.ERROR]


async def test_a_database_that_stops_answering_gets_a_503_not_a_hang(
    make_service: MakeService, own_cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL stopped (SIGSTOP: connections stay open and nothing answers, as behind a
    network that drops everything): a send and a read are answered 503 in bounded time, and the
    process serves again by itself once the database answers."""
    caplog.set_level(logging.DEBUG, logger="diagnoxix")
    service = await make_service(store_url=own_cluster.dsn("notify"))
    ws = await service.connect("patient-1", v1=True, since=0)
    await welcome(ws)
    before = await service.send("patient-1", "before")
    assert (await ws.receive_json(timeout=5))["id"] == before["id"]
    own_cluster.freeze()
    try:
        started = time.monotonic()
        send, read = await asyncio.wait_for(
            asyncio.gather(
                _post(service, "patient-1", "while PostgreSQL does not answer"),
                service.client.get("/v1/users/patient-1/notifications", headers=service.auth()),
            ),
            timeout=60,
        )
        assert send[0] == 503, send
        assert read.status == 503, await read.text()
        # Bounded by the statement and connection timeouts (15 s and 10 s), not by the network.
        assert time.monotonic() - started < 45
    finally:
        own_cluster.thaw()
    stored = await _stores_again(service, timeout=30, what="the process stores again once PostgreSQL answers")
    await _received_once_in_order(ws, stored)
    await ws.close()
    _one_outage_logged(caplog)


async def test_two_processes_on_redis_come_back_together_in_one_seq_order(
    make_service: MakeService, own_cluster: PgCluster, redis_server: RedisServer
) -> None:
    """Both processes of a deployment lose PostgreSQL at once; once it is back, sends through
    either reach a client on the other, live and on resume, each once and in seq order."""
    dsn = own_cluster.dsn("notify")
    a = await make_service(store_url=dsn, broker_url=redis_server.url)
    b = await make_service(store_url=dsn, broker_url=redis_server.url)
    ws = await a.connect("patient-1", v1=True, since=0)
    await welcome(ws)
    before = await b.send("patient-1", "before")
    assert (await ws.receive_json(timeout=5))["id"] == before["id"]

    own_cluster.crash()
    for service in (a, b):
        status, body = await _post(service, "patient-1", "while PostgreSQL is down")
        assert status == 503, body
    own_cluster.restart()
    stored = await _stores_again(b, a, timeout=30, what="both processes store once PostgreSQL is back")
    seqs = [n["seq"] for n in stored]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    await _received_once_in_order(ws, stored)
    await _resumes_with(b, before["seq"], stored)
    await ws.close()
