"""Delivery over real WebSockets: the seed's format, isolation, offline queue, resume, back-pressure."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import pytest

from diagnoxix.keys import HUB, SERVICE, STORE
from diagnoxix.models import NotificationDraft

from .conftest import Service
from .raw_clients import non_reading_socket

SEED_FIELDS = {"type", "user_id", "title", "message", "data", "timestamp", "id"}


async def _receive_notifications(ws: Any, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Collect `count` notification frames (control frames are skipped)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            if "seq" in frame and frame.get("type") not in {"welcome", "pong", "error"}:
                got.append(frame)
    return got


async def _assert_silent(ws: Any, wait: float = 0.2) -> None:
    """Nothing more arrives within `wait` seconds."""
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=wait)


async def test_seed_client_receives_seed_format(dev_service: Service) -> None:
    ws = await dev_service.client.ws_connect("/v1/ws/notifications?user_id=user-123")
    resp = await dev_service.client.post(
        "/v1/ws/test-notification",
        json={"user_id": "user-123", "title": "Test Notification", "message": "This is a test message"},
    )
    assert resp.status == 201
    (frame,) = await _receive_notifications(ws, 1)
    assert set(frame) >= SEED_FIELDS
    assert frame["title"] == "Test Notification"
    assert frame["message"] == "This is a test message"
    assert frame["user_id"] == "user-123"
    assert frame["timestamp"].endswith("Z")
    assert frame["priority"] == "normal"
    assert frame["read"] is False
    assert frame["seq"] >= 1
    # The seed's keepalive ping is accepted silently and never closes the connection.
    await ws.send_json({"type": "ping"})
    await _assert_silent(ws)
    assert not ws.closed
    await ws.close()


async def test_every_connection_of_a_user_receives_and_nobody_else(service: Service) -> None:
    phone, laptop = await service.connect("alice"), await service.connect("alice")
    bob = await service.connect("bob")
    await service.send("alice", "For Alice")
    for ws in (phone, laptop):
        (frame,) = await _receive_notifications(ws, 1)
        assert frame["title"] == "For Alice"
    await _assert_silent(bob)
    for ws in (phone, laptop, bob):
        await ws.close()


async def test_isolation_under_concurrent_sends(service: Service) -> None:
    users = [f"patient-{i}" for i in range(6)]
    sockets = {u: [await service.connect(u), await service.connect(u)] for u in users}
    plan = [random.choice(users) for _ in range(120)]

    async def send_one(user: str, n: int) -> None:
        await service.send(user, f"n{n}", data={"for": user})

    await asyncio.gather(*(send_one(u, n) for n, u in enumerate(plan)))
    for user, conns in sockets.items():
        expected = plan.count(user)
        for ws in conns:
            frames = await _receive_notifications(ws, expected)
            assert {f["user_id"] for f in frames} == {user}
            assert {f["data"]["for"] for f in frames} == {user}
            seqs = [f["seq"] for f in frames]
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == expected
            await _assert_silent(ws, 0.05)
            await ws.close()


async def test_offline_queue_delivered_on_connect_once(service: Service) -> None:
    sent = [await service.send("offline-user", f"t{i}") for i in range(5)]
    ws = await service.connect("offline-user")
    frames = await _receive_notifications(ws, 5)
    assert [f["id"] for f in frames] == [s["id"] for s in sent]
    await ws.close()
    await service.app[STORE].flush()
    again = await service.connect("offline-user")
    await _assert_silent(again)
    await again.close()


async def test_v1_resume_with_since_has_no_gap_or_duplicate_while_sends_continue(service: Service) -> None:
    user = "resumer"
    total = 150
    ws = await service.connect(user)

    async def keep_sending() -> None:
        for i in range(total):
            await service.send(user, f"n{i}")
            if i % 10 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(keep_sending())
    seen: list[int] = []
    # Drop and resume three times while the sender keeps going.
    for _ in range(3):
        frames = await _receive_notifications(ws, 10)
        seen += [f["seq"] for f in frames]
        await ws.close()
        await asyncio.sleep(0.01)
        resumed_from = seen[-1]
        ws = await service.connect(user, v1=True, since=resumed_from)
    while len(seen) < total:
        msg = await ws.receive(timeout=5)
        frame = json.loads(msg.data)
        if frame["type"] == "welcome":
            assert frame["since"] == resumed_from
            continue
        seen.append(frame["seq"])
    await task
    await _assert_silent(ws, 0.1)
    await ws.close()
    assert len(seen) == total
    assert seen == sorted(seen)
    assert len(set(seen)) == total


async def test_v1_client_says_hello_then_gets_welcome(service: Service) -> None:
    for i in range(3):
        await service.send("hello-user", f"t{i}")
    ws = await service.connect("hello-user", v1=True)
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json(timeout=2))["type"] == "pong"
    await ws.send_json({"type": "hello", "since": 1})
    frames = await _receive_notifications(ws, 2)
    assert [f["seq"] for f in frames] == [2, 3]
    welcome = await ws.receive_json(timeout=2)
    assert welcome["type"] == "welcome"
    assert welcome["replayed"] == 2
    assert welcome["since"] == 1
    assert welcome["last_seq"] == 3
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json(timeout=2))["type"] == "pong"
    await ws.close()


async def test_v1_client_without_hello_is_closed_1008(make_service: Any) -> None:
    svc: Service = await make_service(ws_hello_timeout_seconds=0.3)
    ws = await svc.connect("quiet", v1=True)
    msg = await ws.receive(timeout=3)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008
    assert msg.extra == "hello expected"


async def test_v1_malformed_frames_get_errors_then_1008(service: Service) -> None:
    ws = await service.connect("abuser", v1=True, since=0)
    assert (await ws.receive_json(timeout=2))["type"] == "welcome"
    await ws.send_str("not json")
    error = await ws.receive_json(timeout=2)
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_frame"
    await ws.send_json({"type": "teleport"})
    error = await ws.receive_json(timeout=2)
    assert error["error"]["code"] == "unknown_type"
    for _ in range(20):
        if ws.closed:
            break
        await ws.send_bytes(b"\x00\x01")
    async with asyncio.timeout(3):
        while (await ws.receive()).type not in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}:
            pass
    assert ws.close_code == 1008


async def test_client_frame_over_16_kib_closes_1009(service: Service) -> None:
    ws = await service.connect("big-talker")
    await ws.send_str("x" * 20_000)
    msg = await ws.receive(timeout=3)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1009


async def test_broadcast_reaches_everyone_connected_and_is_stored_once(service: Service) -> None:
    plain, v1 = await service.connect("p1"), await service.connect("p2", v1=True, since=0)
    assert (await v1.receive_json(timeout=2))["type"] == "welcome"
    resp = await service.client.post(
        "/v1/broadcasts", json={"title": "Maintenance", "message": "At 22:00"}, headers=service.auth()
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["connections"] == 2
    for ws in (plain, v1):
        (frame,) = await _receive_notifications(ws, 1)
        assert frame["title"] == "Maintenance"
        assert frame["user_id"] == "*"
        await ws.close()
    assert (await service.app[STORE].counts()).stored == 1


async def test_a_broadcast_never_overtakes_frames_queued_before_it(service: Service) -> None:
    # A broadcast is written to each socket at once when nothing is queued for it; committed in
    # one batch after a patient's own notification, it must still reach that patient second.
    ws = await service.connect("p1")
    other = await service.connect("p2")
    drafts = [
        NotificationDraft(user_id="p1", type="lab_result", title="Own first", message="m", data={}),
        NotificationDraft(user_id="*", type="system", title="Everyone second", message="m", data={}),
    ]
    await service.app[SERVICE].send(drafts)
    first, second = await _receive_notifications(ws, 2)
    assert [first["title"], second["title"]] == ["Own first", "Everyone second"]
    assert first["seq"] < second["seq"]
    (only,) = await _receive_notifications(other, 1)
    assert only["title"] == "Everyone second"


async def test_stalled_client_is_closed_1013_and_does_not_delay_others(make_service: Any) -> None:
    svc: Service = await make_service(ws_send_queue_limit=8)
    hub = svc.app[HUB]
    healthy = await svc.connect("healthy")
    port = svc.client.port
    assert port is not None
    stalled = await asyncio.to_thread(
        non_reading_socket, port, f"/v1/ws/notifications?token={svc.token('stalled')}"
    )
    try:
        async with asyncio.timeout(5):
            while hub.connections_of("stalled") == 0:
                await asyncio.sleep(0.01)
        bulky = {"blob": "x" * 15_000}
        drafts = [
            NotificationDraft(user_id="stalled", type="lab_result_ready", title="t", message="m", data=bulky)
            for _ in range(100)
        ]
        for _ in range(20):
            await svc.app[SERVICE].send(drafts)
            if hub.connections_of("stalled") == 0:
                break
        # The healthy patient is served at once while the stalled one is being dropped.
        await svc.send("healthy", "still fast")
        (frame,) = await _receive_notifications(healthy, 1, timeout=1.0)
        assert frame["title"] == "still fast"
        async with asyncio.timeout(5):
            while hub.connections_of("stalled") > 0:
                await asyncio.sleep(0.02)
        # Nothing is lost: the stalled user's notifications stay in the store, undelivered.
        assert (await svc.app[STORE].counts()).stored >= 101
    finally:
        stalled.close()
        await healthy.close()


async def test_stalled_client_sees_close_code_1013(make_service: Any) -> None:
    svc: Service = await make_service(ws_send_queue_limit=2)
    ws = await svc.connect("slow-reader")
    hub = svc.app[HUB]
    # Overflow the queue before the sender can drain it (publish is synchronous).
    drafts = [
        NotificationDraft(user_id="slow-reader", type="t", title="t", message="m", data={}) for _ in range(10)
    ]
    await svc.app[SERVICE].send(drafts)
    async with asyncio.timeout(3):
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1013  # not ws.close_code: the server may drop TCP before our echo (1006)
    assert hub.connections_of("slow-reader") == 0
    # What it missed is still in the store and comes back on reconnect with since.
    again = await svc.connect("slow-reader", since=0)
    frames = await _receive_notifications(again, 10)
    assert [f["seq"] for f in frames] == list(range(1, 11))
    await again.close()


async def test_permessage_deflate_is_off_by_default(service: Service) -> None:
    # Browsers always offer deflate; accepting it costs ~7-10x the memory per idle socket.
    ws = await service.connect("deflate-user", compress=15)
    assert ws.compress == 0
    await ws.close()


@pytest.mark.sqlite_file
async def test_a_client_that_stops_reading_gets_everything_in_order_later(make_service: Any) -> None:
    """Frames go out through the shared fan-out while a socket has room and through the
    connection's own sender once it has none; the switch loses, repeats and reorders nothing."""
    # Room for the whole burst in its queue: this is about order, not about the queue's bound.
    service: Service = await make_service(ws_send_queue_bytes=16 * 1024 * 1024)
    hub = service.app[HUB]
    paused = await service.connect("paused")
    healthy = await service.connect("healthy")
    bulky = {"blob": "y" * 12_000}
    drafts = [
        NotificationDraft(user_id="paused", type="lab_result_ready", title=f"n{i}", message="m", data=bulky)
        for i in range(400)
    ]
    await service.app[SERVICE].send(drafts)  # ~5 MB: more than the socket buffers hold
    async with asyncio.timeout(5):
        while hub.queued_frames == 0:  # the paused client's frames wait in its own queue
            await asyncio.sleep(0.01)
    await service.send("healthy", "not held up")
    (frame,) = await _receive_notifications(healthy, 1, timeout=1.0)
    assert frame["title"] == "not held up"
    frames = await _receive_notifications(paused, 400, timeout=20.0)
    assert [f["title"] for f in frames] == [f"n{i}" for i in range(400)]
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + 400))
    await paused.close()
    await healthy.close()
