"""Requests and failed credentials per client address: 429 with Retry-After, others unaffected."""

from __future__ import annotations

from typing import Any

import aiohttp

from diagnoxix.keys import API_KEYS

from .conftest import Service


def _from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_requests_without_an_api_key_are_limited_per_address(make_service: Any) -> None:
    service: Service = await make_service(http_requests_per_second_per_address=5)
    patient = {"Authorization": f"Bearer {service.token('p1')}"}
    statuses = [
        (await service.client.get("/v1/users/p1/unread-count", headers=patient)).status for _ in range(5)
    ]
    assert statuses == [200] * 5
    refused = await service.client.get("/v1/users/p1/unread-count", headers=patient)
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    # A backend service with its API key is not limited by its address.
    for _ in range(20):
        assert (await service.client.get("/v1/users/p1/unread-count", headers=service.auth())).status == 200
    # Nor is anyone at another address.
    async with _from("127.0.0.7") as other:
        resp = await other.get(f"{service.client.make_url('/v1/users/p1/unread-count')}", headers=patient)
        assert resp.status == 200


async def test_failed_credentials_spend_the_addresss_budget(make_service: Any) -> None:
    service: Service = await make_service(auth_failures_per_minute_per_address=3)
    guess = {"Authorization": "Bearer dxn_guess_notarealsecretatall"}
    for _ in range(3):
        assert (await service.client.get("/v1/presence", headers=guess)).status == 401
    # The address may present no credentials for the rest of the minute, right ones included.
    spent = await service.client.get("/v1/presence", headers=service.auth())
    assert spent.status == 429
    assert int(spent.headers["Retry-After"]) >= 1
    socket = await service.client.get(
        f"/v1/ws/notifications?token={service.token('p1')}",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert socket.status == 429
    # Nor in a socket's subprotocol.
    offered = await service.client.get(
        "/v1/ws/notifications",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": f"diagnoxix.v1, bearer.{service.token('p1')}",
        },
    )
    assert offered.status == 429
    # Requests without credentials still get their answer (a health check, the document).
    assert (await service.client.get("/v1/openapi.json")).status == 200
    async with _from("127.0.0.8") as other:
        resp = await other.get(f"{service.client.make_url('/v1/presence')}", headers=service.auth())
        assert resp.status == 200


async def test_requests_with_one_api_key_are_limited_per_key(make_service: Any) -> None:
    service: Service = await make_service(api_key_requests_per_second=3)
    for _ in range(3):
        assert (await service.client.get("/v1/presence", headers=service.auth())).status == 200
    looping = await service.client.get("/v1/presence", headers=service.auth())
    assert looping.status == 429
    assert (await looping.json())["error"]["code"] == "rate_limited"
    assert int(looping.headers["Retry-After"]) >= 1
    # Another service's key, from the same address, is not slowed down.
    _, other_key = await service.app[API_KEYS].create("another-service")
    other = await service.client.get("/v1/presence", headers={"Authorization": f"Bearer {other_key}"})
    assert other.status == 200
