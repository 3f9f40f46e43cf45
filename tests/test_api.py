"""The HTTP API as a backend service uses it: auth, validation, batches, idempotency, history."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any, cast

import pytest
from aiohttp import web

from diagnoxix.api.openapi import openapi_document
from diagnoxix.keys import API_KEYS, STORE
from diagnoxix_client import NotifyClient

from .api_routes import BODIES, call_every_route, documented_routes, needs_api_key
from .conftest import Service


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


# -- authentication ------------------------------------------------------------------------


async def test_send_requires_an_api_key(service: Service) -> None:
    body = {"user_id": "u1", "title": "t"}
    await _error(await service.client.post("/v1/notifications", json=body), 401, "api_key_required")
    bad = {"Authorization": "Bearer dxn_nope_nope"}
    await _error(
        await service.client.post("/v1/notifications", json=body, headers=bad), 401, "invalid_api_key"
    )
    await _error(
        await service.client.post("/v1/notifications", json=body, headers={"Authorization": "Basic abc"}),
        401,
        "api_key_required",
    )
    assert (await service.app[STORE].counts()).stored == 0


async def test_tampered_key_secret_is_refused(service: Service) -> None:
    tampered = service.api_key[:-2] + ("AA" if not service.api_key.endswith("AA") else "BB")
    resp = await service.client.post(
        "/v1/notifications",
        json={"user_id": "u1", "title": "t"},
        headers={"Authorization": f"Bearer {tampered}"},
    )
    await _error(resp, 401, "invalid_api_key")


async def test_revoked_key_stops_working_at_once(service: Service) -> None:
    key_id = service.api_key.split("_")[1]
    assert await service.app[API_KEYS].revoke(key_id)
    resp = await service.client.post(
        "/v1/notifications", json={"user_id": "u1", "title": "t"}, headers=service.auth()
    )
    err = await _error(resp, 401, "invalid_api_key")
    assert "revoked" in err["message"]


async def test_a_key_in_use_is_refused_at_once_when_revoked(service: Service) -> None:
    """The server remembers keys it found (no database read per request); revoking one (as the
    dashboard does) still refuses its very next request."""
    for _ in range(3):
        await service.send("u1")
    key_id = service.api_key.split("_")[1]
    assert await service.app[API_KEYS].revoke(key_id)
    resp = await service.client.post(
        "/v1/notifications", json={"user_id": "u1", "title": "t"}, headers=service.auth()
    )
    err = await _error(resp, 401, "invalid_api_key")
    assert "revoked" in err["message"]


async def test_test_notification_needs_a_key_outside_dev_mode(service: Service, dev_service: Service) -> None:
    body = {"user_id": "user-123", "title": "Test Notification", "message": "This is a test message"}
    await _error(await service.client.post("/v1/ws/test-notification", json=body), 401, "api_key_required")
    resp = await service.client.post("/v1/ws/test-notification", json=body, headers=service.auth())
    assert resp.status == 201
    resp = await dev_service.client.post("/v1/ws/test-notification", json=body)
    assert resp.status == 201
    assert (await resp.json())["notification"]["delivery"] == "queued"


# -- validation and error shape ------------------------------------------------------------


async def test_every_field_problem_is_reported(service: Service) -> None:
    body = {
        "user_id": "bad id!",
        "type": "welcome",
        "title": "",
        "message": "m" * 5000,
        "data": [1, 2],
        "priority": "urgent",
        "colour": "red",
    }
    resp = await service.client.post("/v1/notifications", json=body, headers=service.auth())
    err = await _error(resp, 422, "validation_failed")
    assert set(err["details"]) == {"user_id", "type", "title", "message", "data", "priority", "colour"}
    assert (await service.app[STORE].counts()).stored == 0


async def test_data_over_the_limit_is_refused(service: Service) -> None:
    body = {"user_id": "u1", "title": "t", "data": {"blob": "x" * 20_000}}
    err = await _error(
        await service.client.post("/v1/notifications", json=body, headers=service.auth()),
        422,
        "validation_failed",
    )
    assert "data" in err["details"]


async def test_wrong_content_type_and_bad_json(service: Service) -> None:
    headers = service.auth()
    resp = await service.client.post("/v1/notifications", data="user_id=u1", headers=headers)
    await _error(resp, 415, "unsupported_media_type")
    resp = await service.client.post(
        "/v1/notifications", data='{"user_id": ', headers={**headers, "Content-Type": "application/json"}
    )
    await _error(resp, 400, "invalid_json")


async def test_body_over_the_limit_is_413(make_service: Any) -> None:
    svc: Service = await make_service(max_body_bytes=10_000)
    body = {"user_id": "u1", "title": "t", "message": "m" * 3900, "data": {"x": "y" * 9000}}
    resp = await svc.client.post("/v1/notifications", json=body, headers=svc.auth())
    await _error(resp, 413, "payload_too_large")


async def test_unknown_route_and_method_use_the_error_shape(service: Service) -> None:
    await _error(await service.client.get("/v1/nothing-here"), 404, "not_found")
    resp = await service.client.delete("/v1/notifications", headers=service.auth())
    await _error(resp, 405, "method_not_allowed")


# -- sending -------------------------------------------------------------------------------


async def test_single_send_answers_with_the_stored_notification(service: Service) -> None:
    note = await service.send(
        "patient-1", "Appointment Confirmed", type="appointment_confirmed", priority="high"
    )
    assert note["seq"] == 1
    assert note["id"]
    assert note["type"] == "appointment_confirmed"
    assert note["priority"] == "high"
    assert note["delivery"] == "queued"
    assert note["delivered_at"] is None
    assert note["read_at"] is None


async def test_batch_is_stored_in_order_and_all_or_nothing(service: Service) -> None:
    items = [{"user_id": f"u{i % 7}", "title": f"n{i}"} for i in range(1000)]
    resp = await service.client.post(
        "/v1/notifications", json={"notifications": items}, headers=service.auth()
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["count"] == 1000
    assert [n["title"] for n in body["notifications"]] == [f"n{i}" for i in range(1000)]
    seqs = [n["seq"] for n in body["notifications"]]
    assert seqs == sorted(seqs)
    # One bad item refuses the whole batch, naming the item.
    items[3] = {"user_id": "u1"}
    resp = await service.client.post(
        "/v1/notifications", json={"notifications": items}, headers=service.auth()
    )
    err = await _error(resp, 422, "validation_failed")
    assert "notifications[3].title" in err["details"]
    assert (await service.app[STORE].counts()).stored == 1000


async def test_broadcast_reports_every_field_problem_and_stores_nothing(service: Service) -> None:
    body = {"message": 5, "priority": "urgent", "ttl": 5, "type": "pong", "colour": "red"}
    resp = await service.client.post("/v1/broadcasts", json=body, headers=service.auth())
    err = await _error(resp, 422, "validation_failed")
    assert set(err["details"]) == {"title", "message", "priority", "ttl", "type", "colour"}
    assert (await service.app[STORE].counts()).stored == 0


async def test_a_broadcast_ttl_or_message_of_the_wrong_type_is_a_field_error(service: Service) -> None:
    # A ttl that is not a number once reached the draft check as is (a 500); `false` was no message.
    body = {"title": "Maintenance", "ttl": "1h", "message": False, "priority": ""}
    resp = await service.client.post("/v1/broadcasts", json=body, headers=service.auth())
    err = await _error(resp, 422, "validation_failed")
    assert set(err["details"]) == {"ttl", "message", "priority"}
    assert (await service.app[STORE].counts()).stored == 0


async def test_batch_over_1000_is_refused(service: Service) -> None:
    items = [{"user_id": "u1", "title": "t"} for _ in range(1001)]
    resp = await service.client.post(
        "/v1/notifications", json={"notifications": items}, headers=service.auth()
    )
    err = await _error(resp, 422, "batch_too_large")
    assert set(err["details"]) == {"notifications"}
    resp = await service.client.post("/v1/notifications", json={"notifications": []}, headers=service.auth())
    await _error(resp, 422, "validation_failed")


async def test_idempotency_key_makes_retries_store_nothing_twice(service: Service) -> None:
    ws = await service.connect("u1")
    headers = {**service.auth(), "Idempotency-Key": "req-42"}
    body = {"notifications": [{"user_id": "u1", "title": "a"}, {"user_id": "u1", "title": "b"}]}
    first = await service.client.post("/v1/notifications", json=body, headers=headers)
    assert first.status == 201
    # A retry, and a burst of concurrent retries, answer the same ids and store nothing new.
    retries = await asyncio.gather(
        *(service.client.post("/v1/notifications", json=body, headers=headers) for _ in range(5))
    )
    first_ids = [n["id"] for n in (await first.json())["notifications"]]
    for resp in retries:
        assert resp.status == 201
        assert resp.headers["Idempotent-Replayed"] == "true"
        assert [n["id"] for n in (await resp.json())["notifications"]] == first_ids
    assert (await service.app[STORE].counts()).stored == 2
    frames = [await ws.receive_json(timeout=2) for _ in range(2)]
    assert [f["id"] for f in frames] == first_ids
    try:
        extra = await ws.receive(timeout=0.2)
        raise AssertionError(f"delivered twice: {extra}")
    except TimeoutError:
        pass
    await ws.close()
    # The same key with a different body is a client bug, not a retry.
    changed = await service.client.post(
        "/v1/notifications", json={"user_id": "u1", "title": "other"}, headers=headers
    )
    await _error(changed, 422, "idempotency_key_reused")


async def test_concurrent_first_requests_with_one_key_store_once(service: Service) -> None:
    headers = {**service.auth(), "Idempotency-Key": "race-1"}
    body = {"user_id": "u1", "title": "once"}
    responses = await asyncio.gather(
        *(service.client.post("/v1/notifications", json=body, headers=headers) for _ in range(8))
    )
    ids = {(await r.json())["notification"]["id"] for r in responses}
    assert all(r.status == 201 for r in responses)
    assert len(ids) == 1
    assert (await service.app[STORE].counts()).stored == 1


async def test_idempotency_keys_are_per_api_key(service: Service) -> None:
    _, other_key = await service.app[API_KEYS].create("other-service")
    body = {"user_id": "u1", "title": "t"}
    for key in (service.api_key, other_key):
        resp = await service.client.post(
            "/v1/notifications",
            json=body,
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "k1"},
        )
        assert resp.status == 201
        assert "Idempotent-Replayed" not in resp.headers
    assert (await service.app[STORE].counts()).stored == 2


# -- reading -------------------------------------------------------------------------------


async def test_history_is_newest_first_with_a_cursor_and_per_user(service: Service) -> None:
    for i in range(7):
        await service.send("alice", f"a{i}")
        await service.send("bob", f"b{i}")
    url = "/v1/users/alice/notifications?limit=3"
    titles: list[str] = []
    cursor = None
    for _ in range(4):
        resp = await service.client.get(url + (f"&before={cursor}" if cursor else ""), headers=service.auth())
        assert resp.status == 200
        page = await resp.json()
        titles += [n["title"] for n in page["notifications"]]
        assert {n["user_id"] for n in page["notifications"]} <= {"alice"}
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert titles == [f"a{i}" for i in reversed(range(7))]


async def test_the_python_client_pages_history_with_the_integer_cursor(service: Service) -> None:
    for i in range(3):
        await service.send("carl", f"c{i}")
    async with NotifyClient(str(service.client.make_url("/")), service.api_key) as notify:
        first = await notify.history("carl", limit=2)
        assert type(first["next_cursor"]) is int
        rest = await notify.history("carl", limit=2, before=first["next_cursor"])
    assert [n["title"] for n in first["notifications"] + rest["notifications"]] == ["c2", "c1", "c0"]
    assert rest["next_cursor"] is None


async def test_history_requires_a_key_and_validates(service: Service) -> None:
    await _error(await service.client.get("/v1/users/alice/notifications"), 401, "credentials_required")
    resp = await service.client.get("/v1/users/alice/notifications?limit=0", headers=service.auth())
    await _error(resp, 400, "invalid_limit")
    resp = await service.client.get("/v1/users/alice/notifications?before=abc", headers=service.auth())
    await _error(resp, 400, "invalid_before")


async def test_minted_token_connects_as_that_user(service: Service) -> None:
    resp = await service.client.post(
        "/v1/tokens", json={"user_id": "patient-9", "ttl": 120}, headers=service.auth()
    )
    assert resp.status == 201
    body = await resp.json()
    assert body["user_id"] == "patient-9"
    assert body["expires_at"].endswith("Z")
    ws = await service.client.ws_connect(f"/v1/ws/notifications?token={body['token']}")
    await service.send("patient-9", "for you")
    assert (await ws.receive_json(timeout=2))["title"] == "for you"
    await ws.close()


async def test_token_minting_validates_and_needs_a_key(service: Service) -> None:
    await _error(await service.client.post("/v1/tokens", json={"user_id": "u1"}), 401, "api_key_required")
    resp = await service.client.post(
        "/v1/tokens", json={"user_id": "u 1", "ttl": 10**9}, headers=service.auth()
    )
    err = await _error(resp, 422, "validation_failed")
    assert set(err["details"]) == {"user_id", "ttl"}


async def test_stats_are_aggregate_counts(service: Service) -> None:
    ws = await service.connect("u1")
    await service.send("u1", "t")
    await ws.receive_json(timeout=2)
    await service.app[STORE].flush()
    resp = await service.client.get("/v1/ws/stats")
    assert resp.status == 200
    stats = await resp.json()
    assert stats["status"] == "ok"
    assert stats["connections"] == 1
    assert stats["users_online"] == 1
    assert stats["notifications"]["stored"] == 1
    assert "u1" not in await resp.text()
    await ws.close()


async def test_health(service: Service) -> None:
    resp = await service.client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_openapi_describes_exactly_the_served_routes(service: Service) -> None:
    resp = await service.client.get("/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc == openapi_document(service.settings)
    served: set[tuple[str, str]] = set()
    for route in service.app.router.routes():
        # Static files (the browser SDK) are not part of the API.
        if route.method == "HEAD" or isinstance(route.resource, web.StaticResource):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix") or info.get("directory")
        # The staff dashboard (HTML pages, its static files, `/` redirecting to it) is not the API.
        if path is None or path == "/" or str(path).startswith("/dashboard"):
            continue
        served.add((route.method.lower(), path))
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented


async def test_a_store_that_cannot_answer_is_a_documented_503_on_every_route_with_a_key(
    service: Service,
) -> None:
    await service.app[STORE].close()  # as at shutdown: the API key check itself cannot run
    checked = 0
    for method, path, url, operation in documented_routes(service.settings):
        if not needs_api_key(operation):
            continue
        resp = await service.client.request(method, url, json=BODIES.get(path), headers=service.auth())
        await _error(resp, 503, "shutting_down")
        assert "503" in operation["responses"], (method, path)
        checked += 1
    # 13, the four of /v1/scheduled, the two corrections, the three of preferences, the eleven
    # of critical results, the HTTP ack, the two of a user's locale, and the three of push
    # subscriptions and one notification by id
    assert checked == 40
    # And the rest (probes, stats, metrics, a user's own routes): a 503 at worst, never a 500.
    for method, path, status, text in await call_every_route(service):
        assert status < 500 or status == 503, (method, path, status, text)


async def test_the_document_states_the_servers_own_token_ceiling(make_service: Any) -> None:
    svc: Service = await make_service(token_max_ttl_seconds=900)
    doc = await (await svc.client.get("/v1/openapi.json")).json()
    ttl = doc["components"]["schemas"]["TokenInput"]["properties"]["ttl"]
    assert (ttl["minimum"], ttl["maximum"]) == (10, 900)
    resp = await svc.client.post("/v1/tokens", json={"user_id": "u1", "ttl": 901}, headers=svc.auth())
    await _error(resp, 422, "validation_failed")
    resp = await svc.client.post("/v1/tokens", json={"user_id": "u1", "ttl": 900.0}, headers=svc.auth())
    assert resp.status == 201  # 900.0 is the integer 900 to JSON Schema, so to the server too


@pytest.mark.sqlite_file
async def test_audit_log_records_sends_and_is_append_only(service: Service) -> None:

    await service.send("u1", "t")
    await service.client.post("/v1/tokens", json={"user_id": "u1"}, headers=service.auth())
    store = service.app[STORE]
    await store.flush()
    entries = await store.audit_entries()
    actions = [e["action"] for e in entries]
    assert "notification.send" in actions
    assert "token.mint" in actions
    assert all(e["actor"].startswith("apikey:") for e in entries)
    with sqlite3.connect(service.settings.db_path) as conn:
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)


async def test_a_lone_surrogate_is_refused_and_never_takes_other_requests_with_it(service: Service) -> None:
    # JSON can spell a lone surrogate ("\\ud800") that UTF-8, and so the database, cannot hold.
    bad = '{"user_id": "mallory", "title": "x\\ud800", "message": "m"}'

    async def good(i: int) -> int:
        resp = await service.client.post(
            "/v1/notifications", json={"user_id": f"p{i}", "title": "Lab ready"}, headers=service.auth()
        )
        return resp.status

    async def evil() -> tuple[int, Any]:
        headers = {**service.auth(), "Content-Type": "application/json"}
        resp = await service.client.post("/v1/notifications", data=bad, headers=headers)
        return resp.status, await resp.json()

    results = await asyncio.gather(*(good(i) for i in range(10)), evil(), *(good(i) for i in range(10, 20)))
    status, body = cast("tuple[int, Any]", results[10])
    assert status == 422  # the API's status for a body that parses but does not validate
    assert "title" in body["error"]["details"]
    assert [r for i, r in enumerate(results) if i != 10] == [201] * 20
