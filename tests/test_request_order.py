"""Credentials before anything else, and JSON read strictly (one value per key)."""

from __future__ import annotations

import json

from diagnoxix.keys import STORE

from .conftest import Service


async def test_credentials_are_checked_before_the_request_is_judged(service: Service) -> None:
    bad_path = "/v1/users/%20bad%20id/notifications"
    resp = await service.client.get(bad_path)
    assert resp.status == 401  # not 400: a caller without credentials learns nothing
    resp = await service.client.get(bad_path, headers={"Authorization": "Bearer not-a-token"})
    assert resp.status == 401
    resp = await service.client.get(bad_path, headers={"Authorization": f"Bearer {service.token('p1')}"})
    assert resp.status == 403  # a token opens its own user's data only
    resp = await service.client.get(bad_path, headers=service.auth())
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_user_id"
    resp = await service.client.post(
        "/v1/notifications", data="{not json", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 401


async def test_a_body_that_names_a_key_twice_is_refused(service: Service) -> None:
    body = '{"user_id": "p1", "title": "for p1", "user_id": "p2", "message": "m"}'
    resp = await service.client.post(
        "/v1/notifications", data=body, headers={**service.auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "duplicate_key"
    assert (await service.app[STORE].counts()).stored == 0


async def test_a_frame_that_names_a_key_twice_is_refused(service: Service) -> None:
    ws = await service.connect("p1", v1=True)
    await ws.send_json({"type": "hello"})
    assert (await ws.receive_json(timeout=2))["type"] == "welcome"
    await ws.send_str('{"type": "ping", "type": "read_all", "request_id": "r1"}')
    reply = json.loads((await ws.receive(timeout=2)).data)
    assert reply["type"] == "error"
    assert reply["error"]["code"] == "invalid_frame"
    await ws.close()


async def test_every_reply_echoes_its_request_id(service: Service) -> None:
    ws = await service.connect("p2", v1=True)
    await ws.send_json({"type": "hello"})
    assert (await ws.receive_json(timeout=2))["type"] == "welcome"
    await ws.send_json({"type": "ping", "request_id": "r-ping"})
    pong = await ws.receive_json(timeout=2)
    assert (pong["type"], pong["request_id"]) == ("pong", "r-ping")
    await ws.send_json({"type": "token", "token": service.token("p2"), "request_id": "r-token"})
    refreshed = await ws.receive_json(timeout=2)
    assert (refreshed["type"], refreshed["request_id"]) == ("refreshed", "r-token")
    await ws.close()


async def test_ids_that_are_not_text_the_database_can_hold_are_refused(service: Service) -> None:
    lone_surrogate = '{"ids": ["\\ud800"]}'
    resp = await service.client.post(
        "/v1/users/p3/notifications/read",
        data=lone_surrogate,
        headers={**service.auth(), "Content-Type": "application/json"},
    )
    assert resp.status == 422
    assert "ids" in (await resp.json())["error"]["details"]
    ws = await service.connect("p3", v1=True)
    await ws.send_json({"type": "hello"})
    assert (await ws.receive_json(timeout=2))["type"] == "welcome"
    for kind in ("ack", "read"):
        await ws.send_str('{"type": "' + kind + '", "ids": ["\\ud800"]}')
        reply = json.loads((await ws.receive(timeout=2)).data)
        assert (reply["type"], reply["error"]["code"]) == ("error", "invalid_ids")
    assert not ws.closed
    await ws.close()
    # A Python caller that skips the rules gets nothing marked, not a crash.
    assert await service.app[STORE].acknowledge("p3", ["\ud800"]) == []
