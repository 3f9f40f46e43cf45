"""Devices and revocation: every minted token is a device that staff, the user's backend and the
user may revoke; a revoked token is refused everywhere and its sockets close with 4003.

Real server on loopback, real WebSocket clients, a temp SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from diagnoxix.config import Settings
from diagnoxix.keys import API_KEYS, STORE

from .conftest import Service
from .servers import start_app

WS = "/v1/ws/notifications"


async def _mint(service: Service, user_id: str) -> tuple[str, str]:
    """(token, token id), minted as a clinic backend does."""
    resp = await service.client.post("/v1/tokens", json={"user_id": user_id}, headers=service.auth())
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return body["token"], body["token_id"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The code of the server's close frame. Not `ws.close_code`: the server may drop the TCP
    connection before the client's echo is written, and the client then records 1006."""
    async with asyncio.timeout(5):
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    return int(msg.data)


async def _audit(service: Service, action: str) -> list[dict[str, Any]]:
    store = service.app[STORE]
    await store.flush()
    return [e for e in await store.audit_entries(limit=50) if e["action"] == action]


async def test_a_minted_token_is_a_device_with_its_user_agent_and_last_use(service: Service) -> None:
    token, token_id = await _mint(service, "dora")
    ws = await service.client.ws_connect(f"{WS}?token={token}", headers={"User-Agent": "ClinicApp/2.1"})
    await service.app[STORE].flush()
    resp = await service.client.get("/v1/users/dora/devices", headers=service.auth())
    assert resp.status == 200
    body = await resp.json()
    (device,) = body["devices"]
    assert body["user_id"] == "dora"
    assert device["token_id"] == token_id
    assert device["user_agent"] == "ClinicApp/2.1"
    assert device["last_seen_at"] is not None
    assert device["revoked_at"] is None
    assert token not in await resp.text()
    await ws.close()


async def test_a_revoked_token_is_refused_at_the_handshake_and_over_http(service: Service) -> None:
    token, token_id = await _mint(service, "eli")
    assert (await service.client.get("/v1/users/eli/unread-count", headers=_bearer(token))).status == 200
    resp = await service.client.delete(f"/v1/users/eli/devices/{token_id}", headers=service.auth())
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["revoked"] is True
    assert body["device"]["revoked_at"] is not None
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await service.client.ws_connect(f"{WS}?token={token}")
    assert refused.value.status == 401
    resp = await service.client.get("/v1/users/eli/unread-count", headers=_bearer(token))
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_token"
    # Revoking again changes nothing and says so.
    resp = await service.client.delete(f"/v1/users/eli/devices/{token_id}", headers=service.auth())
    assert (await resp.json())["revoked"] is False
    *_, entry = await _audit(service, "device.revoke")  # newest first: the first revocation
    assert entry["actor"].startswith("apikey:")
    assert entry["target"] == "eli"
    assert entry["details"]["token_ids"] == [token_id]
    assert token not in str(entry)


async def test_revoking_one_device_closes_its_socket_and_leaves_the_other(service: Service) -> None:
    phone, phone_id = await _mint(service, "fay")
    laptop, _ = await _mint(service, "fay")
    on_phone = await service.client.ws_connect(f"{WS}?token={phone}")
    on_laptop = await service.client.ws_connect(f"{WS}?token={laptop}")
    resp = await service.client.delete(f"/v1/users/fay/devices/{phone_id}", headers=service.auth())
    assert resp.status == 200
    assert await _closed_with(on_phone) == 4003
    assert not on_laptop.closed
    await service.send("fay", "still here")
    assert (await on_laptop.receive_json(timeout=3))["title"] == "still here"
    await on_laptop.close()


async def test_revoking_all_devices_closes_every_socket_and_refuses_each_token(service: Service) -> None:
    tokens = [(await _mint(service, "gus"))[0] for _ in range(2)]
    sockets = [await service.client.ws_connect(f"{WS}?token={t}") for t in tokens]
    bystander = await service.connect("hal")
    resp = await service.client.delete("/v1/users/gus/devices", headers=service.auth())
    assert resp.status == 200
    assert await resp.json() == {"user_id": "gus", "revoked": 2}
    for ws in sockets:
        assert await _closed_with(ws) == 4003
    for token in tokens:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await service.client.ws_connect(f"{WS}?token={token}")
        assert refused.value.status == 401
    assert not bystander.closed
    await bystander.close()
    (entry,) = await _audit(service, "device.revoke_all")
    assert entry["details"]["count"] == 2


async def test_a_refresh_frame_with_a_revoked_token_is_an_error(service: Service) -> None:
    token, _ = await _mint(service, "ida")
    spare, spare_id = await _mint(service, "ida")
    ws = await service.client.ws_connect(f"{WS}?token={token}&since=0", protocols=("diagnoxix.v1",))
    assert (await ws.receive_json(timeout=3))["type"] == "welcome"
    await service.client.delete(f"/v1/users/ida/devices/{spare_id}", headers=service.auth())
    await ws.send_json({"type": "token", "token": spare})
    frame = await ws.receive_json(timeout=3)
    assert frame["type"] == "error"
    assert frame["error"]["code"] == "invalid_token"
    assert "revoked" in frame["error"]["message"]
    await ws.close()


async def test_a_refreshed_connection_belongs_to_its_new_device(service: Service) -> None:
    first, first_id = await _mint(service, "jo")
    second, second_id = await _mint(service, "jo")
    ws = await service.client.ws_connect(f"{WS}?token={first}&since=0", protocols=("diagnoxix.v1",))
    assert (await ws.receive_json(timeout=3))["type"] == "welcome"
    await ws.send_json({"type": "token", "token": second})
    assert (await ws.receive_json(timeout=3))["type"] == "refreshed"
    await service.client.delete(f"/v1/users/jo/devices/{first_id}", headers=service.auth())
    await service.send("jo", "after")
    assert (await ws.receive_json(timeout=3))["title"] == "after"
    await service.client.delete(f"/v1/users/jo/devices/{second_id}", headers=service.auth())
    assert await _closed_with(ws) == 4003


async def test_a_user_lists_and_revokes_only_their_own_devices(service: Service) -> None:
    own, own_id = await _mint(service, "kim")
    _, other_id = await _mint(service, "lee")
    resp = await service.client.get("/v1/users/kim/devices", headers=_bearer(own))
    assert resp.status == 200
    assert [d["token_id"] for d in (await resp.json())["devices"]] == [own_id]
    for method, path in (
        ("GET", "/v1/users/lee/devices"),
        ("DELETE", "/v1/users/lee/devices"),
        ("DELETE", f"/v1/users/lee/devices/{other_id}"),
    ):
        resp = await service.client.request(method, path, headers=_bearer(own))
        assert resp.status == 403, path
        assert (await resp.json())["error"]["code"] == "forbidden"
    # Another user's device id under one's own path is not found, never revoked.
    resp = await service.client.delete(f"/v1/users/kim/devices/{other_id}", headers=_bearer(own))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "device_not_found"
    resp = await service.client.delete("/v1/users/kim/devices/not-an-id", headers=_bearer(own))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_token_id"
    # The user revokes their own device; the token is refused from then on.
    resp = await service.client.delete(f"/v1/users/kim/devices/{own_id}", headers=_bearer(own))
    assert resp.status == 200
    assert (await service.client.get("/v1/users/kim/devices", headers=_bearer(own))).status == 401
    (entry,) = await _audit(service, "device.revoke")
    assert entry["actor"] == "user:kim"
    lee = await service.client.get("/v1/users/lee/devices", headers=service.auth())
    assert [d["revoked_at"] for d in (await lee.json())["devices"]] == [None]


async def test_devices_need_credentials(service: Service) -> None:
    for method in ("GET", "DELETE"):
        resp = await service.client.request(method, "/v1/users/mo/devices")
        assert resp.status == 401
        assert set((await resp.json())["error"]) == {"code", "message", "details"}


async def test_a_revocation_survives_a_restart(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    server = await start_app(settings)
    _, key = await server.app[API_KEYS].create("backend")
    auth = _bearer(key)
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.port}"
        resp = await http.post(f"{base}/v1/tokens", json={"user_id": "ned"}, headers=auth)
        body = await resp.json()
        token, token_id = body["token"], body["token_id"]
        resp = await http.delete(f"{base}/v1/users/ned/devices/{token_id}", headers=auth)
        assert resp.status == 200
        await server.close()
        server = await start_app(settings)
        base = f"http://127.0.0.1:{server.port}"
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{base}{WS}?token={token}")
            assert refused.value.status == 401
            resp = await http.get(f"{base}/v1/users/ned/unread-count", headers=_bearer(token))
            assert resp.status == 401
        finally:
            await server.close()


async def test_a_user_agent_that_is_not_utf8_is_kept_readable_and_harms_no_write(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not UTF-8 in the handshake's User-Agent (aiohttp hands them on as lone
    surrogates): the device is still recorded, and the writes batched with it commit."""
    token, token_id = await _mint(service, "uma")
    port = service.client.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET {WS}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n"
        ).encode()
        + b"User-Agent: Clinic\xff\xfeApp/3\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    # A send right after shares the writer's next batch with the device's touch.
    await service.send("uma", "after the odd handshake")
    await service.app[STORE].flush()
    resp = await service.client.get("/v1/users/uma/devices", headers=service.auth())
    (device,) = (await resp.json())["devices"]
    assert device["token_id"] == token_id
    assert device["user_agent"].startswith("Clinic")
    assert device["user_agent"].endswith("App/3")
    assert "\ufffd" in device["user_agent"]
    assert device["last_seen_at"] is not None
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    writer.close()
