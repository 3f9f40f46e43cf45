"""With Redis, what counts connections or requests counts them in every process: the per-user
connection cap, presence (the API and the dashboard's figures) and the rate limits."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from .cluster_support import MakeService, connections_seen, eventually, pair, welcome
from .dashboard_support import StaffClient, start_server
from .redis_server import RedisServer


async def test_the_per_user_cap_holds_across_processes(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    a, b = await pair(make_service, redis_server, ws_max_connections_per_user=2)
    on_a = await a.connect("patient-1")
    on_b = await b.connect("patient-1")

    async def both_seen() -> bool:
        return await connections_seen(a, "patient-1") == 2 and await connections_seen(b, "patient-1") == 2

    await eventually(both_seen, what="each process counts the other's connection")
    for service in (a, b):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await service.connect("patient-1")
        assert refused.value.status == 429
        # The SSE fallback counts against the same cap.
        resp = await service.client.get(f"/v1/sse/notifications?token={service.token('patient-1')}")
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "too_many_connections"
    # Another user is not affected.
    other = await a.connect("patient-2")
    await on_b.close()

    async def one_left() -> bool:
        return await connections_seen(a, "patient-1") == 1

    await eventually(one_left, what="B's closed connection no longer counted on A")
    again = await a.connect("patient-1")
    for ws in (on_a, other, again):
        await ws.close()


async def test_presence_counts_every_process(make_service: MakeService, redis_server: RedisServer) -> None:
    a, b = await pair(make_service, redis_server)
    on_a = await a.connect("patient-3", v1=True, since=0)
    await welcome(on_a)
    on_b = [await b.connect("patient-3"), await b.connect("patient-4")]

    async def listed() -> bool:
        resp = await a.client.get("/v1/presence", headers=a.auth())
        body = await resp.json()
        counts = {u["user_id"]: u["connections"] for u in body["users"]}
        return body["online"] == 2 and counts == {"patient-3": 2, "patient-4": 1}

    await eventually(listed, what="A's /v1/presence lists B's connections")
    resp = await a.client.get("/v1/users/patient-4/presence", headers=a.auth())
    body = await resp.json()
    assert body["online"] is True
    assert body["connections"] == 1
    assert body["since"] is not None
    for ws in on_b:
        await ws.close()

    async def gone() -> bool:
        resp = await a.client.get("/v1/users/patient-4/presence", headers=a.auth())
        return (await resp.json())["online"] is False

    await eventually(gone, what="a closed connection on B leaves A's presence")
    await on_a.close()


def _figure(html: str, name: str) -> int:
    match = re.search(rf'data-stat="{name}"[^>]*data-value="(\d+)"', html)
    assert match, f"no {name} figure"
    return int(match.group(1))


async def test_the_dashboard_counts_connections_in_every_process(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a = await start_server(tmp_path / "a", broker_url=redis_server.url)
    b = await start_server(tmp_path / "b", broker_url=redis_server.url, with_admin=False)
    staff = StaffClient(a)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        assert (await staff.login()).status == 303
        for server, user in ((a, "patient-5"), (b, "patient-5"), (b, "patient-6")):
            sockets.append(await staff.http.ws_connect(f"{server.ws_url}?token={server.token(user)}"))

        async def counted() -> bool:
            html = await (await staff.get("/dashboard/")).text()
            return (_figure(html, "connections"), _figure(html, "users_online")) == (3, 2)

        await eventually(counted, what="the overview counts B's connections")
        users = await (await staff.get("/dashboard/users")).text()
        assert "patient-6" in users
    finally:
        for ws in sockets:
            await ws.close()
        await staff.close()
        await a.close()
        await b.close()


async def test_a_rate_limit_holds_across_processes(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    a, b = await pair(make_service, redis_server, http_requests_per_second_per_address=5)
    statuses = []
    for i in range(6):
        resp = await (a if i % 2 == 0 else b).client.get("/v1/push/public-key")
        statuses.append(resp.status)
    assert statuses == [200] * 5 + [429]
    assert resp.headers["Retry-After"]
