"""Critical results: groups, group sends (a copy each), personal acknowledgement (frame, HTTP, on
behalf), the `acknowledged` frame live and on resume, status and timeline, over a real server."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest

from diagnoxix.keys import STORE
from diagnoxix_client import NotifyClient, Subscriber

from .conftest import Service


async def _api(svc: Service, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
    headers = kw.pop("headers", None) or svc.auth()
    resp = await svc.client.request(method, path, json=body, headers=headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _welcomed(svc: Service, user: str, since: int = 0) -> Any:
    ws = await svc.connect(user, v1=True, since=since)
    async with asyncio.timeout(3):
        while json.loads((await ws.receive()).data)["type"] != "welcome":
            pass
    return ws


async def _next(ws: Any, kind: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
    """The next frame of `kind` (None: the next notification)."""
    async with asyncio.timeout(timeout):
        while True:
            frame: dict[str, Any] = json.loads((await ws.receive()).data)
            if kind is None and "seq" in frame and frame.get("priority"):
                return frame
            if frame["type"] == kind:
                return frame


async def _ward(svc: Service) -> None:
    await _api(svc, "PUT", "/v1/groups/ward:b-nurses", status=201)
    for user, on_duty in (("nurse-a", True), ("nurse-b", True), ("nurse-c", False)):
        await _api(svc, "PUT", f"/v1/groups/ward:b-nurses/members/{user}", {"on_duty": on_duty})


def _rows(svc: Service, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(svc.settings.db_path) as conn:
        return conn.execute(sql, params).fetchall()


async def test_groups_and_members_are_managed_over_the_api(service: Service) -> None:
    await _ward(service)
    assert (await _api(service, "PUT", "/v1/groups/ward:b-nurses"))["created"] is False
    body = await _api(service, "GET", "/v1/groups/ward:b-nurses")
    assert [(m["user_id"], m["on_duty"]) for m in body["members"]] == [
        ("nurse-a", True),
        ("nurse-b", True),
        ("nurse-c", False),
    ]
    groups = (await _api(service, "GET", "/v1/groups"))["groups"]
    assert [(g["group"], g["members"], g["on_duty"]) for g in groups] == [("ward:b-nurses", 3, 2)]
    await _api(service, "DELETE", "/v1/groups/ward:b-nurses/members/nurse-c")
    await _api(service, "DELETE", "/v1/groups/ward:b-nurses/members/nurse-c", status=404)
    await _api(service, "PUT", "/v1/groups/nope/members/nurse-a", {}, status=404)
    await _api(service, "PUT", "/v1/groups/ward:b-nurses/members/nurse-a", {"on_duty": "yes"}, status=422)
    await _api(service, "GET", "/v1/groups/bad%20name", status=400)
    await _api(service, "POST", "/v1/groups/nope/notifications", {"title": "K 6.8"}, status=404)


async def test_a_group_send_gives_each_member_on_duty_a_copy_and_one_acknowledgement_closes_all(
    service: Service,
) -> None:
    await _ward(service)
    a, b = await _welcomed(service, "nurse-a"), await _welcomed(service, "nurse-b")
    sent = await _api(
        service,
        "POST",
        "/v1/groups/ward:b-nurses/notifications",
        {"type": "lab_critical", "title": "Critical potassium", "message": "Bed 4", "priority": "critical"},
        status=201,
    )
    item = sent["critical"]
    assert item["state"] == "open"
    assert item["target"] == "group:ward:b-nurses"
    assert sorted(r["user_id"] for r in item["recipients"]) == ["nurse-a", "nurse-b"]  # not off duty
    copy_a, copy_b = await _next(a), await _next(b)
    assert copy_a["id"] != copy_b["id"]
    assert copy_a["seq"] != copy_b["seq"]
    assert copy_a["title"] == copy_b["title"] == "Critical potassium"

    await a.send_json({"type": "acknowledge", "id": copy_a["id"], "request_id": "r1"})
    # Its own copy is closed (the `acknowledged` event, in the stream), then the reply.
    assert (await _next(a, "acknowledged"))["id"] == copy_a["id"]
    reply = await _next(a, "acknowledge")
    assert reply == {
        "type": "acknowledge",
        "id": copy_a["id"],
        "critical_id": item["critical_id"],
        "changed": True,
        "acknowledged_by": "nurse-a",
        "acknowledged_at": reply["acknowledged_at"],
        "request_id": "r1",
    }
    closed_b = await _next(b, "acknowledged")
    assert closed_b["id"] == copy_b["id"]
    assert closed_b["critical_id"] == item["critical_id"]
    assert closed_b["by"] == "nurse-a"
    assert closed_b["on_behalf"] is False
    assert closed_b["seq"] > copy_b["seq"]

    status = await _api(service, "GET", f"/v1/notifications/{copy_b['id']}/acknowledgement")
    assert status["state"] == "acknowledged"
    assert (status["acknowledged_by"], status["acknowledged_via"]) == ("nurse-a", "socket")
    assert status["device"] is not None  # the token that acknowledged
    again = await _api(
        service,
        "POST",
        f"/v1/notifications/{copy_b['id']}/acknowledgement",
        headers={"Authorization": f"Bearer {service.token('nurse-b')}"},
    )
    assert again["changed"] is False
    assert again["acknowledged_by"] == "nurse-a"

    # A device of nurse-b that was offline resumes: the acknowledgement comes once, in seq order.
    late = await service.connect("nurse-b", v1=True, since=copy_b["seq"])
    async with asyncio.timeout(3):
        seen = []
        while (frame := json.loads((await late.receive()).data))["type"] != "welcome":
            seen.append(frame)
    assert [(f["type"], f["id"]) for f in seen] == [("acknowledged", copy_b["id"])]
    for ws in (a, b, late):
        await ws.close()


async def test_a_critical_send_over_http_is_acknowledged_by_its_recipient_or_on_behalf_with_a_reason(
    service: Service,
) -> None:
    note = await service.send("dr-house", "Troponin critical", message="ED bay 2", priority="critical")
    status = await _api(service, "GET", f"/v1/notifications/{note['id']}/acknowledgement")
    assert status["state"] == "open"
    assert [r["notification_id"] for r in status["recipients"]] == [note["id"]]
    other = {"Authorization": f"Bearer {service.token('dr-wilson')}"}
    path = f"/v1/notifications/{note['id']}/acknowledgement"
    await _api(service, "POST", path, headers=other, status=404)  # not theirs
    await _api(service, "GET", path, headers=other, status=404)
    body = await _api(service, "POST", path, {}, status=422)
    assert "reason" in body["error"]["details"]
    done = await _api(service, "POST", path, {"reason": "called him on the ward phone"})
    assert done["changed"] is True
    assert done["on_behalf"] is True
    assert done["acknowledged_by"].startswith("apikey:")
    plain = await service.send("dr-house", "Routine result", message="m")
    await _api(service, "GET", f"/v1/notifications/{plain['id']}/acknowledgement", status=404)

    await service.app[STORE].flush()
    full = await _api(service, "GET", f"/v1/critical/{status['critical_id']}")
    events = [e["event"] for e in full["timeline"]]
    assert events[:2] == ["opened", "sent"]
    assert events[-1] == "acknowledged_on_behalf"
    assert full["timeline"][-1]["details"]["reason"] == "called him on the ward phone"
    # The audit trail never holds the words.
    text = json.dumps(_rows(service, "SELECT * FROM critical_events")) + json.dumps(
        _rows(service, "SELECT * FROM audit_log")
    )
    assert "Troponin" not in text
    assert "ED bay" not in text


async def test_requires_ack_makes_any_send_an_item_and_plain_group_sends_need_none(service: Service) -> None:
    await _ward(service)
    resp = await service.client.post(
        "/v1/notifications",
        json={
            "notifications": [
                {"user_id": "u1", "title": "a", "requires_ack": True},
                {"user_id": "u2", "title": "b"},
            ]
        },
        headers=service.auth(),
    )
    assert resp.status == 201, await resp.text()
    first, second = (await resp.json())["notifications"]
    assert (await _api(service, "GET", f"/v1/notifications/{first['id']}/acknowledgement"))["state"] == "open"
    await _api(service, "GET", f"/v1/notifications/{second['id']}/acknowledgement", status=404)
    await _api(
        service, "POST", "/v1/notifications", {"user_id": "u", "title": "t", "requires_ack": 1}, status=422
    )
    sent = await _api(
        service, "POST", "/v1/groups/ward:b-nurses/notifications", {"title": "Handover at 7"}, status=201
    )
    assert sent["critical"]["state"] == "sent"
    copy = sent["notifications"][0]["id"]
    await _api(service, "POST", f"/v1/notifications/{copy}/acknowledgement", {"reason": "x"}, status=409)


@pytest.mark.parametrize("key", ["retry-1"])
async def test_an_idempotent_retry_of_a_critical_send_opens_nothing_twice(service: Service, key: str) -> None:
    body = {"user_id": "dr-house", "title": "K 6.8", "priority": "critical"}
    headers = service.auth() | {"Idempotency-Key": key}
    first = await service.client.post("/v1/notifications", json=body, headers=headers)
    again = await service.client.post("/v1/notifications", json=body, headers=headers)
    assert (first.status, again.status) == (201, 201)
    assert (await first.json())["notification"]["id"] == (await again.json())["notification"]["id"]
    assert _rows(service, "SELECT count(*) FROM critical_items") == [(1,)]
    other = await service.client.post("/v1/notifications", json=body | {"title": "K 7.0"}, headers=headers)
    assert other.status == 422


async def test_the_python_client_sends_to_a_group_and_a_subscriber_acknowledges(service: Service) -> None:
    base = str(service.client.make_url("")).rstrip("/")
    heard: list[dict[str, Any]] = []
    async with NotifyClient(base, service.api_key) as notify:
        await notify.set_group_member("role:on-call-lab", "lab-1")

        async def token() -> str:
            return service.token("lab-1")

        async with Subscriber(base, token, since=0, on_acknowledged=heard.append) as lab:
            await asyncio.sleep(0.3)  # connected
            sent = await notify.send_to_group("role:on-call-lab", "Critical INR", priority="critical")
            note = await lab.next(3)
            assert note["id"] == sent["notifications"][0]["id"]
            await lab.acknowledge(note["id"])
            async with asyncio.timeout(3):
                while not heard:
                    await asyncio.sleep(0.02)
        assert heard[0]["id"] == note["id"]
        status = await notify.acknowledgement(note["id"])
        assert (status["state"], status["acknowledged_by"]) == ("acknowledged", "lab-1")
