"""The Redis broker: what one process commits or decides reaches the sockets of every other
process, in one order, through a real redis-server (docs/scaling.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from diagnoxix.delivery.broker import InProcessBroker
from diagnoxix.delivery.redis_events import notification_from_frame, notifications
from diagnoxix.models import Action, Links, Notification, parse_timestamp

from .cluster_support import MakeService, broker_of, pair, welcome
from .redis_server import RedisServer


async def test_a_socket_on_one_process_gets_what_another_stored_in_seq_order(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    a, b = await pair(make_service, redis_server)
    ws = await a.connect("patient-1", v1=True, since=0)
    await welcome(ws)
    plain = await a.connect("patient-1")
    sent = [await b.send("patient-1", f"result {i}") for i in range(10)]
    resp = await b.client.post(
        "/v1/notifications",
        json={"notifications": [{"user_id": "patient-1", "title": f"batch {i}"} for i in range(5)]},
        headers=b.auth(),
    )
    assert resp.status == 201, await resp.text()
    sent += (await resp.json())["notifications"]
    for socket in (ws, plain):
        got = [await socket.receive_json(timeout=5) for _ in sent]
        assert [(f["id"], f["seq"]) for f in got] == [(n["id"], n["seq"]) for n in sent]
        assert [f["title"] for f in got] == [n["title"] for n in sent]
    # The frame is the one B encoded, field for field.
    assert got[0] == {k: sent[0][k] for k in got[0]}
    await ws.close()
    await plain.close()


async def test_every_process_hears_one_order(make_service: MakeService, redis_server: RedisServer) -> None:
    """Sends through both processes at once: both sockets of the user see the same sequence."""
    a, b = await pair(make_service, redis_server)
    on_a = await a.connect("patient-2", v1=True, since=0)
    on_b = await b.connect("patient-2", v1=True, since=0)
    await welcome(on_a)
    await welcome(on_b)

    async def send_through(service: Any, name: str) -> None:
        for i in range(15):
            await service.send("patient-2", f"{name} {i}")

    await asyncio.gather(send_through(a, "a"), send_through(b, "b"))
    seen_a = [(await on_a.receive_json(timeout=5))["id"] for _ in range(30)]
    seen_b = [(await on_b.receive_json(timeout=5))["id"] for _ in range(30)]
    assert seen_a == seen_b
    await on_a.close()
    await on_b.close()


async def test_a_broadcast_reaches_every_process(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    a, b = await pair(make_service, redis_server)
    ws = await a.connect("patient-3")
    resp = await b.client.post(
        "/v1/broadcasts", json={"title": "Clinic closed Friday", "message": "..."}, headers=b.auth()
    )
    assert resp.status == 201, await resp.text()
    frame = await ws.receive_json(timeout=5)
    assert frame["title"] == "Clinic closed Friday"
    assert frame["user_id"] == "*"
    await ws.close()


async def test_an_unread_count_crosses(make_service: MakeService, redis_server: RedisServer) -> None:
    a, b = await pair(make_service, redis_server)
    ws = await a.connect("patient-4", v1=True, since=0)
    await welcome(ws)
    note = await b.send("patient-4")
    assert (await ws.receive_json(timeout=5))["id"] == note["id"]
    resp = await b.client.post(
        "/v1/users/patient-4/notifications/read", json={"ids": [note["id"]]}, headers=b.auth()
    )
    assert resp.status == 200
    assert await ws.receive_json(timeout=5) == {"type": "unread", "count": 0}
    await ws.close()


async def test_a_disconnect_closes_the_users_sockets_in_every_process(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    a, b = await pair(make_service, redis_server)
    ws = await a.connect("patient-5")
    bystander = await a.connect("patient-6")
    broker_of(b).disconnect("patient-5", 1008, "disconnected by clinic staff")
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008
    assert not bystander.closed
    await bystander.close()


async def test_a_device_revoked_in_one_process_is_refused_and_closed_in_every_process(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    a, b = await pair(make_service, redis_server)
    resp = await b.client.post("/v1/tokens", json={"user_id": "patient-7"}, headers=b.auth())
    minted = await resp.json()
    url = f"/v1/ws/notifications?token={minted['token']}"
    ws = await a.client.ws_connect(url)
    resp = await b.client.delete(f"/v1/users/patient-7/devices/{minted['token_id']}", headers=b.auth())
    assert resp.status == 200, await resp.text()
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4003
    # A's own list has it too: the token is refused there before any upgrade.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await a.client.ws_connect(url)
    assert refused.value.status == 401


async def test_drain_returns_once_redis_accepted_everything_queued_before(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    service = await make_service(broker_url=redis_server.url)
    broker = broker_of(service)
    channel = "diagnoxix:events"
    probe = Redis.from_url(redis_server.url)
    listener = probe.pubsub()
    try:
        await listener.subscribe(channel)
        assert await listener.get_message(timeout=5) is not None  # subscribed
        for count in range(300):
            broker.send_control("patient-8", f'{{"type":"unread","count":{count}}}')
        # Nothing was awaited yet: these calls only queued. Once drain returns, Redis has them,
        # so they come before anything published after it.
        await broker.drain()
        await probe.publish(channel, b"after drain")
        heard: list[Any] = []
        while (message := await listener.get_message(ignore_subscribe_messages=True, timeout=5)) is not None:
            if message["data"] == b"after drain":
                break
            decoded = orjson.loads(message["data"])
            heard += decoded if isinstance(decoded, list) else [decoded]
        assert [event["t"] for event in heard] == [f'{{"type":"unread","count":{n}}}' for n in range(300)]
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]
        await probe.aclose()


async def test_drain_returns_promptly_when_redis_is_gone_or_hung(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    service = await make_service(broker_url=redis_server.url)
    broker = broker_of(service)
    redis_server.pause()  # hung: connections open, no answer
    broker.send_control("patient-9", '{"type":"unread","count":1}')
    # Bounded by one reply timeout (2 s): then it is dropped, and drain returns.
    await asyncio.wait_for(broker.drain(), 4.0)
    redis_server.resume()
    await redis_server.kill()
    for _ in range(3):
        broker.send_control("patient-9", '{"type":"unread","count":2}')
        await asyncio.wait_for(broker.drain(), 1.0)
    resp = await service.client.get("/readyz")
    assert (await resp.json())["broker"] == "down"


async def test_the_in_process_broker_has_nothing_to_drain() -> None:
    await asyncio.wait_for(InProcessBroker().drain(), 0.1)
    assert InProcessBroker().state == "in-process"


def test_a_notification_travels_as_its_frame_and_comes_back_whole() -> None:
    created = parse_timestamp("2026-03-01T10:30:00.000Z")
    note = Notification(
        seq=42,
        id="5b0c0000-0000-7000-8000-000000000001",
        user_id="patient-10",
        type="lab_result_ready",
        title="Résultat prêt",
        message="Dr. Weber ✓",
        data={"n": 1, "nested": {"list": [1, 2.5, None]}},
        priority="high",
        created_at=created,
        expires_at=parse_timestamp("2026-06-01T10:30:00.000Z"),
        links=Links(url="https://portal.example.org/r/1", actions=(Action("Confirm", action="confirm"),)),
    )
    frame, expires, user, seq = orjson.loads(notifications([note]))["n"][0]
    assert (user, seq) == ("patient-10", 42)  # outside the frame: read without reading it
    back = notification_from_frame(frame, expires)
    assert back.encode_frame() == note.encode_frame()
    assert back.to_wire() == note.to_wire()
    assert (back.seq, back.created_at, back.expires_at, back.priority) == (
        42,
        created,
        note.expires_at,
        "high",
    )
    assert back.links is not None
    assert back.links.action_names() == ("confirm",)
