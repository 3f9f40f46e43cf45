"""Hostile and unlucky inputs: each test pins a way a notification could be lost, skipped or
made undeliverable, or the server made to fail, and shows it no longer can."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.keys import HUB, SERVICE, STORE
from diagnoxix.models import NotificationDraft
from diagnoxix.rules import FieldErrors
from diagnoxix.store.retention import purge_once
from diagnoxix.store.sqlite.store import SqliteStore
from diagnoxix_client import Subscriber

from .conftest import Service


async def _frame(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(3):
        while True:
            frame: dict[str, Any] = json.loads((await ws.receive()).data)
            if frame["type"] == kind:
                return frame


async def test_seqs_are_never_reused_after_the_newest_rows_were_purged(tmp_path: Path) -> None:
    path = tmp_path / "reuse.sqlite3"
    clock = ManualClock()
    store = SqliteStore(path, clock=clock)
    await store.open()
    await store.insert_notifications(
        [NotificationDraft(user_id="u1", type="t", title="kept", message="m", data={})]
    )
    (short,) = await store.insert_notifications(
        [NotificationDraft(user_id="u1", type="t", title="gone", message="m", data={}, ttl_seconds=1)]
    )
    clock.advance(2)
    assert await purge_once(store) == 1
    await store.close()
    # A client may hold the purged seq as its cursor: the next notification must come after it.
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        (fresh,) = await reopened.insert_notifications(
            [NotificationDraft(user_id="u1", type="t", title="new", message="m", data={})]
        )
        assert fresh.seq > short.seq
        assert await reopened.purged_through("u1") == short.seq
        assert await reopened.purged_through("someone-else") == 0
    finally:
        await reopened.close()


async def test_a_purge_marks_only_the_users_it_touched(make_service: Any) -> None:
    clock = ManualClock()
    service: Service = await make_service(clock=clock)
    svc = service.app[SERVICE]
    await svc.send(
        [NotificationDraft(user_id="ann", type="t", title="short", message="m", data={}, ttl_seconds=1)]
    )
    await service.send("bob", "kept")
    clock.advance(2)
    await purge_once(service.app[STORE])
    # Bob lost nothing: his cursor from before the purge is still honoured.
    ws = await service.connect("bob", v1=True, since=0)
    welcome = await _frame(ws, "welcome")
    assert welcome["recovered"] is True
    await ws.close()


async def test_subscriber_adopts_the_servers_cursor_when_its_own_is_meaningless(service: Service) -> None:
    base = f"http://{service.client.host}:{service.client.port}"

    async def token() -> str:
        return service.token("cara")

    # A cursor and epoch from a database that was since replaced.
    sub = Subscriber(base, token, since=30, epoch="0ld0e9oc4", max_backoff=0.2)
    sub.start()
    try:
        async with asyncio.timeout(3):
            while not sub.welcomes:
                await asyncio.sleep(0.01)
        assert sub.welcomes[0]["reason"] == "epoch_changed"
        assert sub.last_seq == 0
        ws = sub._ws
        assert ws is not None
        await ws.close()
        sent = [await service.send("cara", f"while away {i}") for i in range(5)]
        got = [await sub.next(wait_seconds=3) for _ in range(5)]
        assert [n["id"] for n in got] == [n["id"] for n in sent]
    finally:
        await sub.close()


async def test_nan_and_infinity_are_refused_everywhere(service: Service) -> None:
    raw = '{"user_id": "u1", "title": "t", "data": {"k": NaN, "j": Infinity}}'
    resp = await service.client.post(
        "/v1/notifications", data=raw, headers={**service.auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_json"
    with pytest.raises(FieldErrors) as refused:
        await service.app[SERVICE].create_and_send_notification("u1", "t", "t", "m", {"k": float("nan")})
    assert "data" in refused.value.details
    assert (await service.app[STORE].counts()).stored == 0


async def test_deeply_nested_bodies_and_frames_are_plain_errors(service: Service) -> None:
    nested = "[" * 5000 + "]" * 5000
    resp = await service.client.post(
        "/v1/notifications", data=nested, headers={**service.auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    ws = await service.connect("dan", v1=True, since=0)
    await _frame(ws, "welcome")
    await ws.send_str("[" * 7000 + "]" * 7000)
    assert (await _frame(ws, "error"))["error"]["code"] == "invalid_frame"
    assert not ws.closed
    await ws.close()


async def test_a_huge_history_cursor_is_an_error_frame_not_a_broken_socket(service: Service) -> None:
    ws = await service.connect("eli", v1=True, since=0)
    await _frame(ws, "welcome")
    await ws.send_json({"type": "history", "before": 2**63})
    assert (await _frame(ws, "error"))["error"]["code"] == "invalid_history"
    await ws.send_json({"type": "ping"})
    assert (await _frame(ws, "pong"))["type"] == "pong"
    await ws.close()


async def test_welcome_unread_does_not_count_what_is_still_to_arrive(service: Service) -> None:
    ws = await service.connect("fin", v1=True)  # no since: waits for hello
    for i in range(3):
        await service.send("fin", f"n{i}")  # queued live behind the welcome
    await ws.send_json({"type": "hello"})
    welcome = await _frame(ws, "welcome")
    # The client adds each new unread notification as it arrives; the welcome must not count
    # them too, or the badge would show 6.
    assert welcome["unread"] == 0
    frames = [json.loads((await ws.receive(timeout=2)).data) for _ in range(3)]
    assert [f["title"] for f in frames] == ["n0", "n1", "n2"]
    await ws.close()


@pytest.mark.parametrize("query", ["since=%C2%B2", "since=%D9%A3", "epoch=%C2%B2"])
async def test_non_ascii_digits_are_a_400_not_a_crash(service: Service, query: str) -> None:
    resp = await service.client.get(
        f"/v1/ws/notifications?{query}",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    )  # fmt: skip
    assert resp.status == 400
    resp = await service.client.get("/v1/users/u1/notifications?limit=%C2%B2", headers=service.auth())
    assert resp.status == 400


async def test_an_idempotent_retry_after_expiry_is_410(service: Service) -> None:
    headers = {**service.auth(), "Idempotency-Key": "old-request"}
    body = {"user_id": "gil", "title": "t"}
    assert (await service.client.post("/v1/notifications", json=body, headers=headers)).status == 201
    await service.app[STORE].flush()
    with sqlite3.connect(service.settings.db_path) as conn:  # as the purge job would
        conn.execute("DELETE FROM notifications")
    resp = await service.client.post("/v1/notifications", json=body, headers=headers)
    assert resp.status == 410
    assert (await resp.json())["error"]["code"] == "idempotency_key_expired"


async def test_connections_per_user_are_capped(make_service: Any) -> None:
    svc: Service = await make_service(ws_max_connections_per_user=2)
    first, second = await svc.connect("hana"), await svc.connect("hana")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await svc.connect("hana")
    assert refused.value.status == 429
    other = await svc.connect("ivan")  # other users are unaffected
    for ws in (first, second, other):
        await ws.close()


async def test_a_socket_upgraded_as_shutdown_begins_is_closed_not_left_open(service: Service) -> None:
    # Shutdown closes every registered socket (`on_shutdown`); one still being upgraded then
    # registered afterwards, and its handler outlived shutdown. Shutdown has begun here:
    await service.app[HUB].close_all()
    ws = await service.connect("late-patient")
    async with asyncio.timeout(5):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1001
    assert msg.extra == "server shutdown"
    async with asyncio.timeout(5):  # and its handler has ended: nothing keeps shutdown waiting
        while service.app[HUB].connections_of("late-patient"):
            await asyncio.sleep(0.01)
