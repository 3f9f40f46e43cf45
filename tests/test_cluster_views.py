"""What one process answers about connections counts every process's (docs/scaling.md): two
servers on one PostgreSQL database and one Redis; a patient connected only to B. A send through A
says "sending", A's dashboard too, no Web Push reaches the patient while the page is open,
`/v1/ws/stats` on A counts B's connection. Without Redis each answers for its own connections,
promptly and never with an error, and pushes go out at once (the safe side)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from diagnoxix.delivery.redis_presence import ONLINE_WAIT_SECONDS
from diagnoxix.keys import BROKER, PRESENCE, PUSH

from .cluster_support import eventually
from .dashboard_support import LiveServer, StaffClient, start_server
from .push_service import Browser, PushService
from .redis_server import RedisServer

V1 = ["diagnoxix.v1"]
# Seconds a connected user has to acknowledge before a push (normal priority, here).
DELAY = 2
SETTINGS: dict[str, Any] = {
    "push_hosts": ("127.0.0.1",),
    "push_allow_loopback": True,
    "push_delays": (("low", None), ("normal", DELAY), ("high", DELAY), ("critical", DELAY)),
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def servers(
    pg_dsn: str, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    """A and B: one database, one Redis, the same secret (a token works on either)."""
    shared = SETTINGS | {"store_url": pg_dsn, "broker_url": redis_server.url}
    a = await start_server(tmp_path / "a", **shared)
    b = await start_server(tmp_path / "b", with_admin=False, **shared)
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


async def _connect(http: aiohttp.ClientSession, server: LiveServer, user_id: str) -> Any:
    """A v1 socket of `user_id` on `server`, past its welcome."""
    ws = await http.ws_connect(f"{server.ws_url}?token={server.token(user_id)}&since=0", protocols=V1)
    assert (await ws.receive_json(timeout=10))["type"] == "welcome"
    return ws


async def _sees(server: LiveServer, user_id: str) -> None:
    """Until `server` counts a connection of `user_id` (in any process)."""

    async def counted() -> bool:
        return bool((await server.app[PRESENCE].user(user_id))[0])

    await eventually(counted, what=f"a connection of {user_id} counted")


async def _post(
    http: aiohttp.ClientSession, server: LiveServer, path: str, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(
        f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def _stats(http: aiohttp.ClientSession, server: LiveServer) -> dict[str, Any]:
    async with http.get(f"{server.url}/v1/ws/stats") as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def _subscribe(http: aiohttp.ClientSession, server: LiveServer, user_id: str, browser: Browser) -> None:
    await _post(
        http, server, f"/v1/users/{user_id}/push-subscriptions", server.token(user_id), browser.subscription()
    )


def _pushed(pushes: PushService, browser: Browser) -> list[float]:
    """When the push service accepted a push for `browser` (monotonic seconds)."""
    return [r.at for r in pushes.accepted(browser)]


async def test_a_send_through_a_counts_a_connection_to_b_in_answers_stats_and_dashboard(
    servers: tuple[LiveServer, LiveServer], http: aiohttp.ClientSession
) -> None:
    a, b = servers
    key = await a.api_key()
    ws = await _connect(http, b, "patient-1")
    await _sees(a, "patient-1")

    one = await _post(http, a, "/v1/notifications", key, {"user_id": "patient-1", "title": "Lab result"})
    assert one["notification"]["delivery"] == "sending"
    batch = await _post(
        http,
        a,
        "/v1/notifications",
        key,
        {"notifications": [{"user_id": user, "title": "Reminder"} for user in ("patient-1", "patient-2")]},
    )
    assert [n["delivery"] for n in batch["notifications"]] == ["sending", "queued"]
    # The page on B shows them (and never acknowledges: they stay "sending").
    shown = [(await ws.receive_json(timeout=10))["id"] for _ in range(2)]
    assert shown == [one["notification"]["id"], batch["notifications"][0]["id"]]

    on_a, on_b = await _stats(http, a), await _stats(http, b)
    assert (on_a["connections"], on_a["users_online"]) == (1, 1)
    assert on_a["this_process"] == {"connections": 0, "users_online": 0}
    assert (on_b["connections"], on_b["this_process"]["connections"]) == (1, 1)
    broadcast = await _post(http, a, "/v1/broadcasts", key, {"title": "Closed Friday"})
    assert broadcast["connections"] == 1

    staff = StaffClient(a)
    try:
        assert (await staff.login()).status == 303
        page = await (await staff.get("/dashboard/notifications?user=patient-1")).text()
        assert page.count("state-sending") == 2
        assert "state-queued" not in page
        where = await (await staff.get(f"/dashboard/notifications/{one['notification']['id']}")).text()
        assert "sending" in where
        assert "queued" not in where
        # The patient's page on A counts B's connection, and its history says "sending" too.
        user = await (await staff.get("/dashboard/users/patient-1")).text()
        assert 'data-user-stat="connections">1<' in user
        assert 'data-connections-elsewhere="1"' in user
        assert "Not connected" not in user
        assert "state-sending" in user
        assert "state-queued" not in user
    finally:
        await staff.close()
    await ws.close()


async def test_no_push_while_the_page_is_open_on_another_process(
    servers: tuple[LiveServer, LiveServer], http: aiohttp.ClientSession, pushes: PushService
) -> None:
    a, b = servers
    pushes.vapid_key = a.app[PUSH].public_key
    key = await a.api_key()
    browsers = {user: pushes.browser() for user in ("ana", "ben", "cara")}
    for user, browser in browsers.items():
        await _subscribe(http, a, user, browser)
    # Ana and Cara have the page open on B; Ben has no page open anywhere.
    ana, cara = await _connect(http, b, "ana"), await _connect(http, b, "cara")
    await _sees(a, "ana")
    await _sees(a, "cara")

    sent_at = time.monotonic()
    notes = {
        user: (await _post(http, a, "/v1/notifications", key, {"user_id": user, "title": "Result"}))[
            "notification"
        ]
        for user in browsers
    }
    # Ana reads it on the page and acknowledges after a moment: a push routed at once would be out
    # by then; one that waits for the priority's delay is cancelled.
    assert (await ana.receive_json(timeout=10))["id"] == notes["ana"]["id"]
    await asyncio.sleep(0.5)
    await ana.send_json({"type": "ack", "ids": [notes["ana"]["id"]]})
    assert (await ana.receive_json(timeout=10))["type"] in ("ack", "unread")
    # Cara's page shows it, nobody acknowledges: pushed once the delay has passed.
    assert (await cara.receive_json(timeout=10))["id"] == notes["cara"]["id"]

    async def cara_pushed() -> bool:
        return bool(_pushed(pushes, browsers["cara"]))

    await eventually(cara_pushed, timeout=DELAY + 10, what="Cara's push after the delay")
    assert _pushed(pushes, browsers["cara"])[0] - sent_at >= DELAY - 0.1
    # Ben, with no page open anywhere, was pushed at once.
    assert _pushed(pushes, browsers["ben"])
    assert _pushed(pushes, browsers["ben"])[0] - sent_at < DELAY
    await asyncio.sleep(max(0.0, sent_at + DELAY + 1.0 - time.monotonic()))
    assert _pushed(pushes, browsers["ana"]) == []
    assert [r.browser_id for r in pushes.received].count(browsers["ana"].id) == 0
    await ana.close()
    await cara.close()


async def test_without_redis_each_process_answers_for_itself_and_pushes_at_once(
    servers: tuple[LiveServer, LiveServer],
    http: aiohttp.ClientSession,
    pushes: PushService,
    redis_server: RedisServer,
) -> None:
    a, b = servers
    pushes.vapid_key = a.app[PUSH].public_key
    key = await a.api_key()
    browser = pushes.browser()
    await _subscribe(http, a, "dana", browser)
    ws = await _connect(http, b, "dana")
    await _sees(a, "dana")

    await redis_server.kill()

    async def down() -> bool:
        async with http.get(f"{a.url}/readyz") as resp:
            return resp.status == 200 and (await resp.json())["broker"] == "down"

    await eventually(down, what="A without Redis")
    sent_at = time.monotonic()
    sent = await _post(http, a, "/v1/notifications", key, {"user_id": "dana", "title": "Result"})
    # A's own view: nobody connected here.
    assert sent["notification"]["delivery"] == "queued"
    assert time.monotonic() - sent_at < 1.0
    stats = await _stats(http, a)
    assert (stats["connections"], stats["this_process"]["connections"]) == (0, 0)
    assert (await _stats(http, b))["connections"] == 1

    async def pushed() -> bool:
        return bool(_pushed(pushes, browser))

    # Counted offline: pushed at once, not after the delay.
    await eventually(pushed, timeout=DELAY + 10, what="the push without Redis")
    assert _pushed(pushes, browser)[0] - sent_at < DELAY
    await ws.close()


async def test_a_registration_through_one_process_pushes_what_another_sends(
    servers: tuple[LiveServer, LiveServer],
    http: aiohttp.ClientSession,
    pushes: PushService,
    redis_server: RedisServer,
) -> None:
    """B started before the registrations: it learns of each, live through Redis, and once Redis
    is back after losing one, by reading the users again."""
    a, b = servers
    pushes.vapid_key = a.app[PUSH].public_key
    key = await b.api_key()
    dora, eve = pushes.browser(), pushes.browser()
    await _subscribe(http, a, "dora", dora)
    sent = await _post(http, b, "/v1/notifications", key, {"user_id": "dora", "title": "Result"})

    async def dora_pushed() -> bool:
        return bool(_pushed(pushes, dora))

    await eventually(dora_pushed, timeout=DELAY + 10, what="Dora's push for B's send")
    assert pushes.accepted(dora)[0].payload["id"] == sent["notification"]["id"]

    # Eve registers through A while Redis is away: the announcement is lost.
    await redis_server.kill()

    async def down() -> bool:
        return b.app[BROKER].state == "down"

    await eventually(down, what="B without Redis")
    await _subscribe(http, a, "eve", eve)
    await redis_server.start()

    async def up() -> bool:
        return (
            a.app[BROKER].state == "up"
            and b.app[BROKER].state == "up"
            and "eve" in b.app[PUSH].router.subscribed
        )

    await eventually(up, timeout=20, what="B read the users again")
    await _post(http, b, "/v1/notifications", key, {"user_id": "eve", "title": "Result"})

    async def eve_pushed() -> bool:
        return bool(_pushed(pushes, eve))

    await eventually(eve_pushed, timeout=DELAY + 10, what="Eve's push for B's send")


async def test_a_hung_redis_holds_a_question_no_longer_than_the_reply_timeout(
    servers: tuple[LiveServer, LiveServer], http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = servers
    ws = await _connect(http, b, "patient-3")
    await _sees(a, "patient-3")
    assert await a.app[PRESENCE].online(["patient-3", "patient-4"]) == {"patient-3"}
    redis_server.pause()
    try:
        started = time.monotonic()
        # No answer from Redis: this process's view (nobody here), within the bound.
        assert await a.app[PRESENCE].online(["patient-3"]) == set()
        assert time.monotonic() - started <= ONLINE_WAIT_SECONDS + 0.5
    finally:
        redis_server.resume()
    await ws.close()


async def test_a_question_about_a_thousand_users_is_one_round_trip_and_follows_processes(
    servers: tuple[LiveServer, LiveServer], http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = servers
    presence = a.app[PRESENCE]
    users = [f"patient-{i}" for i in range(1000)]
    here = await _connect(http, a, "patient-7")
    there = await _connect(http, b, "patient-500")
    await _sees(a, "patient-500")
    assert await presence.online(users) == {"patient-7", "patient-500"}
    probe = Redis.from_url(redis_server.url)
    try:
        await probe.config_resetstat()
        assert await presence.online(users) == {"patient-7", "patient-500"}
        commands = await probe.info("commandstats")
        # The processes and B's share, in one pipeline; nothing per user.
        assert commands["cmdstat_smembers"]["calls"] == 1
        assert commands["cmdstat_hmget"]["calls"] == 1
        # Asked only about users connected here: no Redis at all.
        await probe.config_resetstat()
        assert await presence.online(["patient-7"]) == {"patient-7"}
        assert "cmdstat_hmget" not in await probe.info("commandstats")
    finally:
        await probe.aclose()
    # B stops: its connection stops counting at once (its share is removed).
    await there.close()
    await b.close()
    assert await presence.online(users) == {"patient-7"}
    await here.close()
