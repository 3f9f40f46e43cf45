"""What a process hears from the Redis broker costs it only what its own clients need.

A notification for a recipient with no connection in a process is passed over by its seq, its
frame never read, while the process's watermark still moves past it (or a connection opened
later would miss it). A process hands its hub the very notifications it published, not copies
rebuilt from their frames. Real redis-server; two apps on one PostgreSQL database where seqs
must be shared.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from diagnoxix.delivery.broker import Revocation
from diagnoxix.delivery.hub import Hub
from diagnoxix.keys import HUB, STORE
from diagnoxix.models import Notification

from .cluster_support import MakeService, broker_of, eventually
from .redis_server import RedisServer

CHANNEL = "diagnoxix:events"


@dataclass
class Listener:
    """A subscriber of one process's broker that wants only `wanted` users' notifications."""

    wanted: set[str]
    notes: list[Notification] = field(default_factory=list)
    passed_over: list[tuple[int, int]] = field(default_factory=list)

    def publish(self, notifications: Sequence[Notification]) -> None:
        self.notes.extend(notifications)

    def wants(self, user_id: str) -> bool:
        return user_id in self.wanted

    def passed(self, seq: int, count: int) -> None:
        self.passed_over.append((seq, count))

    def send_control(self, user_id: str, text: str, seq: int | None = None) -> None:
        return

    def disconnect(self, user_id: str, code: int, reason: str) -> None:
        return

    def revoke(self, revocation: Revocation) -> None:
        return


async def _publish(redis: RedisServer, payload: Any) -> None:
    probe = Redis.from_url(redis.url)
    try:
        assert await probe.publish(CHANNEL, orjson.dumps(payload)) >= 1
    finally:
        await probe.aclose()


async def test_a_process_passes_over_what_nobody_there_wants_and_still_resumes_it_whole(
    pg_dsn: str, redis_server: RedisServer, make_service: MakeService
) -> None:
    # The database and Redis first: they outlive the apps, which stop at the test's end.
    a = await make_service(store_url=pg_dsn, broker_url=redis_server.url)
    b = await make_service(store_url=pg_dsn, broker_url=redis_server.url)
    hub_a: Hub = a.app[HUB]
    before = hub_a.published
    # Nobody is connected to A: it hears B's five and passes over each, by its seq.
    early = [await b.send("patient-r", f"early {i}") for i in range(5)]

    async def heard() -> bool:
        return hub_a.published - before >= 5

    await eventually(heard, what="A heard B's notifications")
    assert hub_a.high_seq >= early[-1]["seq"]
    # A connection opened on A now replays them from the store, then goes live: nothing missing,
    # nothing twice.
    ws = await a.connect("patient-r", v1=True, since=0)
    backlog = []
    while (frame := await ws.receive_json(timeout=5)).get("type") != "welcome":
        backlog.append(frame["seq"])
    assert backlog == [n["seq"] for n in early]
    late = [await b.send("patient-r", f"late {i}") for i in range(3)]
    live = [(await ws.receive_json(timeout=5))["seq"] for _ in late]
    assert live == [n["seq"] for n in late]
    await asyncio.sleep(0.2)
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive_json(timeout=0.3)
    await ws.close()


async def test_a_frame_is_read_only_where_its_recipient_is_wanted(
    make_service: MakeService, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    service = await make_service(broker_url=redis_server.url)
    listener = Listener(wanted={"patient-w"})
    broker_of(service).subscribe(listener)
    sender = await make_service(broker_url=redis_server.url)
    good = await sender.send("patient-w", "yours")
    await eventually(lambda: _true(len(listener.notes) == 1), what="the wanted notification")
    frame = listener.notes[0].encode_frame()
    assert orjson.loads(frame)["id"] == good["id"]
    listener.notes.clear()
    caplog.set_level(logging.WARNING, logger="diagnoxix.broker")
    # A frame nobody here wants is never read: not even a broken one is noticed.
    await _publish(
        redis_server,
        {"k": "n", "n": [["not a frame", None, "patient-x", 900], [frame, None, "patient-w", 901]]},
    )
    await eventually(lambda: _true(len(listener.notes) == 1), what="the wanted one of two")
    assert listener.passed_over == [(900, 1)]
    assert listener.notes[0].id == good["id"]
    assert "broker.unreadable_message" not in caplog.text
    # Wanted, the broken frame is refused as someone else's message: logged, not delivered.
    await _publish(redis_server, {"k": "n", "n": [["not a frame", None, "patient-w", 902]]})
    await eventually(lambda: _true("broker.unreadable_message" in caplog.text), what="the warning")
    assert len(listener.notes) == 1
    assert "not a frame" not in caplog.text


async def test_a_message_of_the_earlier_form_is_still_read_whole(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    service = await make_service(broker_url=redis_server.url)
    ws = await service.connect("patient-v")
    sender = await make_service(broker_url=redis_server.url)
    listener = Listener(wanted=set())
    broker_of(sender).subscribe(listener)
    sent = await sender.send("patient-v", "before the upgrade")
    await eventually(lambda: _true(bool(listener.passed_over)), what="the sender heard its own")
    frame = (await ws.receive_json(timeout=5))["id"]
    assert frame == sent["id"]
    [stored] = await sender.app[STORE].get_notifications([sent["id"]])
    # [frame, expires] only, as a process of the earlier version publishes it.
    await _publish(redis_server, {"k": "n", "n": [[stored.encode_frame(), None]]})
    again = await ws.receive_json(timeout=5)
    assert (again["id"], again["seq"]) == (sent["id"], sent["seq"])
    await ws.close()


async def test_a_process_hands_its_hub_the_notifications_it_published(
    make_service: MakeService, redis_server: RedisServer
) -> None:
    service = await make_service(broker_url=redis_server.url)
    committed: list[Notification] = []
    service.app[STORE].add_commit_listener(committed.extend)
    listener = Listener(wanted={"patient-o"})
    broker_of(service).subscribe(listener)
    for i in range(3):
        await service.send("patient-o", f"own {i}")
    await eventually(lambda: _true(len(listener.notes) == 3), what="its own, heard back")
    assert [n.seq for n in listener.notes] == [n.seq for n in committed]
    # The objects themselves, not copies rebuilt from the frames.
    assert all(heard is mine for heard, mine in zip(listener.notes, committed, strict=True))


async def _true(value: bool) -> bool:
    return value
