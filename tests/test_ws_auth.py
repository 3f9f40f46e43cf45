"""Handshake security: every bad credential and bad Origin is refused before any upgrade."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
import pytest

from diagnoxix.auth import TOKEN_AUDIENCE, TOKEN_ISSUER
from diagnoxix.keys import HUB

from .conftest import Service


async def _handshake_status(svc: Service, url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status of a refused handshake and its JSON error body."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await svc.client.ws_connect(url, **kw)
    status = refused.value.status
    # Read the same request as a plain GET with upgrade headers to see the error body.
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **kw.get("headers", {}),
    }
    if kw.get("protocols"):
        headers["Sec-WebSocket-Protocol"] = ", ".join(kw["protocols"])
    resp = await svc.client.get(url, headers=headers)
    assert resp.status == status
    return status, await resp.json()


def _forge(user_id: str, secret: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": user_id, "iat": now, "exp": now + 60, "iss": TOKEN_ISSUER, "aud": TOKEN_AUDIENCE}
    body.update(claims)
    return jwt.encode(body, secret, algorithm="HS256")


async def test_missing_credentials_refused_with_401(service: Service) -> None:
    status, body = await _handshake_status(service, "/v1/ws/notifications")
    assert status == 401
    assert body["error"]["code"] == "token_required"


async def test_user_id_alone_refused_outside_dev_mode(service: Service) -> None:
    status, body = await _handshake_status(service, "/v1/ws/notifications?user_id=user-123")
    assert status == 401
    assert "--dev" in body["error"]["message"]


async def test_forged_token_refused(service: Service) -> None:
    forged = _forge("user-123", "not-the-server-secret-" + "y" * 30)
    status, body = await _handshake_status(service, f"/v1/ws/notifications?token={forged}")
    assert (status, body["error"]["code"]) == (401, "invalid_token")


async def test_expired_token_refused(service: Service) -> None:
    secret = service.settings.secret_key
    assert secret is not None
    expired = _forge("user-123", secret, iat=int(time.time()) - 600, exp=int(time.time()) - 300)
    status, body = await _handshake_status(service, f"/v1/ws/notifications?token={expired}")
    assert status == 401
    assert "expired" in body["error"]["message"]


async def test_token_without_a_token_id_refused(service: Service) -> None:
    # Every token names its device (`jti`): one without cannot be revoked, so it is not accepted.
    secret = service.settings.secret_key
    assert secret is not None
    status, body = await _handshake_status(service, f"/v1/ws/notifications?token={_forge('u1', secret)}")
    assert status == 401
    assert body["error"]["code"] == "invalid_token"


async def test_token_for_another_audience_refused(service: Service) -> None:
    secret = service.settings.secret_key
    assert secret is not None
    other = _forge("user-123", secret, aud="some-other-use")
    status, _ = await _handshake_status(service, f"/v1/ws/notifications?token={other}")
    assert status == 401


async def test_unsigned_alg_none_token_refused(service: Service) -> None:
    now = int(time.time())
    claims = {"sub": "user-123", "iat": now, "exp": now + 60, "iss": TOKEN_ISSUER, "aud": TOKEN_AUDIENCE}
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    status, _ = await _handshake_status(service, f"/v1/ws/notifications?token={unsigned}")
    assert status == 401


async def test_garbage_bearer_subprotocol_refused(service: Service) -> None:
    status, _ = await _handshake_status(
        service, "/v1/ws/notifications", protocols=("diagnoxix.v1", "bearer.not-a-jwt")
    )
    assert status == 401


async def test_bad_token_refused_even_in_dev_mode(dev_service: Service) -> None:
    status, _ = await _handshake_status(dev_service, "/v1/ws/notifications?token=abc&user_id=user-1")
    assert status == 401


async def test_foreign_origin_refused_with_403(service: Service) -> None:
    url = f"/v1/ws/notifications?token={service.token('user-1')}"
    status, body = await _handshake_status(service, url, headers={"Origin": "https://evil.example"})
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")


async def test_null_origin_refused(service: Service) -> None:
    url = f"/v1/ws/notifications?token={service.token('user-1')}"
    status, _ = await _handshake_status(service, url, headers={"Origin": "null"})
    assert status == 403


async def test_same_origin_and_allowlisted_origin_accepted(make_service: Any) -> None:
    svc: Service = await make_service(allowed_origins=("https://portal.clinic.example",))
    url = f"/v1/ws/notifications?token={svc.token('user-1')}"
    own = f"http://{svc.client.host}:{svc.client.port}"
    for origin in (own, "https://portal.clinic.example"):
        ws = await svc.client.ws_connect(url, headers={"Origin": origin})
        await ws.close()
    status, _ = await _handshake_status(svc, url, headers={"Origin": "https://portal.clinic.example.evil"})
    assert status == 403


async def test_localhost_origin_only_in_dev_mode(service: Service, dev_service: Service) -> None:
    origin = {"Origin": "http://localhost:3000"}
    status, _ = await _handshake_status(
        service, f"/v1/ws/notifications?token={service.token('u1')}", headers=origin
    )
    assert status == 403
    ws = await dev_service.client.ws_connect("/v1/ws/notifications?user_id=u1", headers=origin)
    await ws.close()


async def test_bearer_subprotocol_accepted_and_v1_selected(service: Service) -> None:
    token = service.token("user-7")
    ws = await service.client.ws_connect(
        "/v1/ws/notifications?since=0", protocols=("diagnoxix.v1", f"bearer.{token}")
    )
    assert ws.protocol == "diagnoxix.v1"
    welcome = await ws.receive_json(timeout=2)
    assert welcome["type"] == "welcome"
    assert welcome["user_id"] == "user-7"
    await ws.close()


async def test_bearer_only_subprotocol_is_echoed_for_browsers(service: Service) -> None:
    token = service.token("user-7")
    ws = await service.client.ws_connect("/v1/ws/notifications", protocols=(f"bearer.{token}",))
    assert ws.protocol == f"bearer.{token}"
    await ws.close()


async def test_dev_user_id_must_be_well_formed(dev_service: Service) -> None:
    status, body = await _handshake_status(dev_service, "/v1/ws/notifications?user_id=a%20b")
    assert (status, body["error"]["code"]) == (400, "invalid_user_id")


async def test_bad_since_refused(service: Service) -> None:
    url = f"/v1/ws/notifications?token={service.token('u1')}&since=-3"
    status, body = await _handshake_status(service, url)
    assert (status, body["error"]["code"]) == (400, "invalid_since")


async def test_plain_get_without_upgrade_is_a_json_error(service: Service) -> None:
    resp = await service.client.get("/v1/ws/notifications")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "websocket_required"


async def test_a_handshake_aiohttp_refuses_is_a_json_error(service: Service) -> None:
    # The WebSocket handler answers its own handshake errors (no error middleware wraps it).
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "99",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    resp = await service.client.get(f"/v1/ws/notifications?token={service.token('u1')}", headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"


async def test_query_parameters_are_decoded_and_the_first_of_a_repeat_counts(dev_service: Service) -> None:
    ws = await dev_service.client.ws_connect("/v1/ws/notifications?user_id=nurse%40ward-3&user_id=other")
    assert dev_service.app[HUB].presence("nurse@ward-3")[0] == 1
    assert dev_service.app[HUB].presence("other")[0] == 0
    await ws.close()
