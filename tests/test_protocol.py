"""The v1 protocol as a client lives it: welcome and recovery, acks, read state, history, token
refresh, presence, broadcasts for the offline, retention."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import aiohttp
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.keys import HUB, SERVICE, STORE
from diagnoxix.models import NotificationDraft
from diagnoxix.store.retention import purge_once

from .conftest import Service


async def _next(ws: Any, kind: str, timeout: float = 2.0) -> dict[str, Any]:
    """The next frame of `kind`, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            frame: dict[str, Any] = json.loads(msg.data)
            if frame["type"] == kind:
                return frame


async def _welcome(svc: Service, user: str, **kw: Any) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Connect as a v1 client; returns the socket, its welcome, and the notifications before it."""
    ws = await svc.connect(user, v1=True, **kw)
    if kw.get("since") is None:
        await ws.send_json({"type": "hello", **({"epoch": kw["epoch"]} if "epoch" in kw else {})})
    replayed: list[dict[str, Any]] = []
    async with asyncio.timeout(3):
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == "welcome":
                return ws, frame, replayed
            replayed.append(frame)


async def _silent(ws: Any, wait: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=wait)


# -- welcome and recovery ------------------------------------------------------------------


async def test_welcome_reports_the_resume(service: Service) -> None:
    for i in range(3):
        await service.send("ann", f"n{i}")
    ws, welcome, replayed = await _welcome(service, "ann", since=1)
    assert [f["seq"] for f in replayed] == [2, 3]
    assert welcome["recovered"] is True
    assert "reason" not in welcome
    assert welcome["replayed"] == 2
    assert welcome["last_seq"] == 3
    assert welcome["since"] == 1
    assert welcome["unread"] == 3
    assert welcome["epoch"] == service.app[STORE].epoch
    assert welcome["token_expires_at"].endswith("Z")
    assert welcome["connection_id"]
    assert welcome["server_time"].endswith("Z")
    await ws.close()


async def test_cursor_from_a_replaced_database_is_not_recovered(service: Service) -> None:
    await service.send("ann", "backlog")
    ws = await service.connect("ann", v1=True, since=0)
    ws2 = await service.client.ws_connect(
        f"/v1/ws/notifications?token={service.token('ann')}&since=0&epoch=0123abcd",
        protocols=("diagnoxix.v1",),
    )
    await ws.close()
    replayed = [json.loads((await ws2.receive(timeout=2)).data)]
    welcome = await _next(ws2, "welcome")
    assert (welcome["recovered"], welcome["reason"]) == (False, "epoch_changed")
    # With no usable cursor it falls back to the undelivered backlog.
    assert [f["title"] for f in replayed] == ["backlog"]
    await ws2.close()


async def test_cursor_beyond_the_newest_seq_is_not_recovered(service: Service) -> None:
    await service.send("ann", "one")
    ws, welcome, replayed = await _welcome(service, "ann", since=999)
    assert (welcome["recovered"], welcome["reason"]) == (False, "cursor_ahead")
    assert [f["title"] for f in replayed] == ["one"]
    await ws.close()


async def test_cursor_older_than_retention_is_not_recovered(make_service: Any) -> None:
    clock = ManualClock()
    service: Service = await make_service(clock=clock)
    svc = service.app[SERVICE]
    await svc.send(
        [NotificationDraft(user_id="ann", type="t", title="short-lived", message="m", data={}, ttl_seconds=1)]
    )
    await service.send("ann", "kept")
    clock.advance(2)
    assert await purge_once(service.app[STORE]) == 1
    ws, welcome, replayed = await _welcome(service, "ann", since=0)
    assert (welcome["recovered"], welcome["reason"]) == (False, "expired")
    assert [f["title"] for f in replayed] == ["kept"]
    await ws.close()


async def test_hello_can_carry_the_cursor(service: Service) -> None:
    for i in range(4):
        await service.send("bo", f"n{i}")
    ws = await service.connect("bo", v1=True)
    await ws.send_json({"type": "hello", "since": 2, "epoch": service.app[STORE].epoch})
    frames = [json.loads((await ws.receive(timeout=2)).data) for _ in range(3)]
    assert [f.get("seq") for f in frames[:2]] == [3, 4]
    assert frames[2]["type"] == "welcome"
    assert frames[2]["recovered"] is True
    await ws.send_json({"type": "hello"})
    assert (await _next(ws, "error"))["error"]["code"] == "already_started"
    await ws.close()


# -- acknowledgements ------------------------------------------------------------------------


async def test_unacknowledged_notifications_come_again_until_acked(service: Service) -> None:
    note = await service.send("cy", "lab ready")
    ws, _, replayed = await _welcome(service, "cy")
    assert [f["id"] for f in replayed] == [note["id"]]
    await ws.close()
    # Not acknowledged: sent again on the next connection (at least once).
    ws, _, replayed = await _welcome(service, "cy")
    assert [f["id"] for f in replayed] == [note["id"]]
    await ws.send_json({"type": "ack", "ids": [note["id"]], "request_id": "r1"})
    ack = await _next(ws, "ack")
    assert ack == {"type": "ack", "ids": [note["id"]], "request_id": "r1"}
    await ws.close()
    ws, _, replayed = await _welcome(service, "cy")
    assert replayed == []
    await ws.close()


async def test_a_client_cannot_acknowledge_another_users_notification(service: Service) -> None:
    theirs = await service.send("victim", "private")
    ws, _, _ = await _welcome(service, "intruder")
    await ws.send_json({"type": "ack", "ids": [theirs["id"]]})
    assert (await _next(ws, "ack"))["ids"] == []
    await ws.close()
    victim, _, replayed = await _welcome(service, "victim")
    assert [f["id"] for f in replayed] == [theirs["id"]]
    await victim.close()


async def test_bad_ack_frames_get_errors(service: Service) -> None:
    ws, _, _ = await _welcome(service, "dee")
    for bad in ({"type": "ack"}, {"type": "ack", "ids": "x"}, {"type": "ack", "ids": ["a" * 100]}):
        await ws.send_json(bad)
        assert (await _next(ws, "error"))["error"]["code"] == "invalid_ids"
    await ws.send_json({"type": "ack", "ids": [f"id-{i}" for i in range(201)]})
    assert (await _next(ws, "error"))["error"]["code"] == "invalid_ids"
    await ws.close()


async def test_plain_client_delivery_counts_when_written(service: Service) -> None:
    note = await service.send("eve", "hello")
    plain = await service.connect("eve")
    assert (await plain.receive_json(timeout=2))["id"] == note["id"]
    await plain.close()
    await service.app[STORE].flush()
    ws, _, replayed = await _welcome(service, "eve")
    assert replayed == []
    await ws.close()


# -- read state ------------------------------------------------------------------------------


async def test_read_on_the_phone_updates_the_laptop_badge(service: Service) -> None:
    notes = [await service.send("fay", f"n{i}") for i in range(3)]
    phone, w1, _ = await _welcome(service, "fay")
    laptop, w2, _ = await _welcome(service, "fay")
    other, _, _ = await _welcome(service, "gus")
    assert w1["unread"] == w2["unread"] == 3
    await phone.send_json({"type": "read", "ids": [notes[0]["id"]]})
    assert (await _next(phone, "read"))["unread"] == 2
    assert (await _next(laptop, "unread"))["count"] == 2
    await phone.send_json({"type": "read_all"})
    assert (await _next(phone, "read_all"))["count"] == 2
    assert (await _next(laptop, "unread"))["count"] == 0
    await _silent(other)
    # Read over HTTP (the clinic's own portal backend) updates every connection too.
    await service.send("fay", "n3")
    resp = await service.client.get("/v1/users/fay/unread-count", headers=service.auth())
    assert (await resp.json())["unread"] == 1
    resp = await service.client.post("/v1/users/fay/notifications/read-all", headers=service.auth())
    assert (await resp.json()) == {"count": 1, "unread": 0}
    assert (await _next(laptop, "unread"))["count"] == 0
    for ws in (phone, laptop, other):
        await ws.close()


async def test_a_user_cannot_mark_another_users_notification_read(service: Service) -> None:
    theirs = await service.send("hal", "private")
    ws, _, _ = await _welcome(service, "ida")
    await ws.send_json({"type": "read", "ids": [theirs["id"]]})
    assert (await _next(ws, "read"))["ids"] == []
    await ws.close()
    resp = await service.client.get("/v1/users/hal/unread-count", headers=service.auth())
    assert (await resp.json())["unread"] == 1


# -- history -----------------------------------------------------------------------------------


async def test_history_over_the_socket_with_filters(service: Service) -> None:
    await service.send("jo", "appt", type="appointment_confirmed")
    lab = await service.send("jo", "lab", type="lab_result_ready")
    await service.send("jo", "lab2", type="lab_result_ready")
    await service.send("someone-else", "not yours", type="lab_result_ready")
    ws, _, _ = await _welcome(service, "jo")
    await ws.send_json({"type": "history", "limit": 2, "request_id": "h1"})
    page = await _next(ws, "history")
    assert [n["title"] for n in page["notifications"]] == ["lab2", "lab"]
    assert page["request_id"] == "h1"
    assert page["next_cursor"] == lab["seq"]
    await ws.send_json({"type": "history", "before": page["next_cursor"]})
    assert [n["title"] for n in (await _next(ws, "history"))["notifications"]] == ["appt"]
    await ws.send_json({"type": "history", "filter_type": "lab_result_ready", "unread": True})
    assert [n["title"] for n in (await _next(ws, "history"))["notifications"]] == ["lab2", "lab"]
    await ws.send_json({"type": "history", "limit": 1000})
    assert (await _next(ws, "error"))["error"]["code"] == "invalid_history"
    await ws.close()


async def test_history_pages_alike_over_http_and_the_socket(service: Service) -> None:
    for i in range(5):
        await service.send("pia", f"n{i}")
    ws, _, _ = await _welcome(service, "pia", since=5)
    url = "/v1/users/pia/notifications"
    cursor: int | None = None
    for expected in (["n4", "n3"], ["n2", "n1"], ["n0"]):
        resp = await service.client.get(
            url, params={"limit": 2, **({"before": cursor} if cursor else {})}, headers=service.auth()
        )
        over_http = await resp.json()
        await ws.send_json({"type": "history", "limit": 2, "before": cursor})
        over_socket = await _next(ws, "history")
        ids = [n["id"] for n in over_http["notifications"]]
        assert [n["title"] for n in over_http["notifications"]] == expected
        assert [n["id"] for n in over_socket["notifications"]] == ids
        # One cursor: an integer seq (the page's last) or null, the same over both.
        assert over_http["next_cursor"] == over_socket["next_cursor"]
        cursor = over_http["next_cursor"]
        assert cursor is None or type(cursor) is int
    assert cursor is None
    # One page maximum too.
    ok = await service.client.get(url, params={"limit": 100}, headers=service.auth())
    assert ok.status == 200
    too_many = await service.client.get(url, params={"limit": 101}, headers=service.auth())
    assert (await too_many.json())["error"]["code"] == "invalid_limit"
    await ws.send_json({"type": "history", "limit": 101})
    assert (await _next(ws, "error"))["error"]["code"] == "invalid_history"
    await ws.close()


async def test_history_over_http_with_the_users_own_token(service: Service) -> None:
    await service.send("kim", "mine", type="lab_result_ready")
    await service.send("lee", "theirs")
    own = {"Authorization": f"Bearer {service.token('kim')}"}
    resp = await service.client.get(
        "/v1/users/kim/notifications?type=lab_result_ready&unread=true", headers=own
    )
    assert resp.status == 200
    assert [n["title"] for n in (await resp.json())["notifications"]] == ["mine"]
    # A patient's token never opens another patient's notifications, read state or count.
    for method, path in (
        ("GET", "/v1/users/lee/notifications"),
        ("GET", "/v1/users/lee/unread-count"),
        ("POST", "/v1/users/lee/notifications/read-all"),
    ):
        resp = await service.client.request(method, path, headers=own)
        assert resp.status == 403, path
        assert (await resp.json())["error"]["code"] == "forbidden"
    # Presence and token minting stay service-only.
    assert (await service.client.get("/v1/presence", headers=own)).status == 401
    resp = await service.client.post("/v1/tokens", json={"user_id": "lee"}, headers=own)
    assert resp.status == 401


# -- token refresh ---------------------------------------------------------------------------


async def test_token_refresh_keeps_the_connection_and_silence_closes_it(make_service: Any) -> None:
    svc: Service = await make_service(token_refresh_lead_seconds=1, token_expiry_grace_seconds=0)
    refresher = await svc.client.ws_connect(
        f"/v1/ws/notifications?since=0&token={svc.token('mo', ttl=2)}", protocols=("diagnoxix.v1",)
    )
    silent = await svc.client.ws_connect(
        f"/v1/ws/notifications?since=0&token={svc.token('mo', ttl=2)}", protocols=("diagnoxix.v1",)
    )
    await _next(refresher, "welcome")
    ask = await _next(refresher, "refresh", timeout=3)
    assert ask["expires_at"].endswith("Z")
    await refresher.send_json({"type": "token", "token": svc.token("mo", ttl=60)})
    assert (await _next(refresher, "refreshed"))["expires_at"].endswith("Z")
    async with asyncio.timeout(5):
        while (await silent.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert silent.close_code == 4001
    # The refreshed connection outlives its first token and still receives.
    await svc.send("mo", "still here")
    assert (await _next(refresher, "notification"))["title"] == "still here"
    await refresher.close()


async def test_a_plain_client_is_closed_when_its_token_expires_without_being_asked(make_service: Any) -> None:
    # A plain client cannot refresh: it gets no `refresh` frame, only the close after expiry.
    svc: Service = await make_service(token_refresh_lead_seconds=1, token_expiry_grace_seconds=0)
    plain = await svc.client.ws_connect(f"/v1/ws/notifications?token={svc.token('pia', ttl=2)}")
    async with asyncio.timeout(5):
        msg = await plain.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    assert plain.close_code == 4001


async def test_a_refresh_token_for_another_user_closes_the_connection(service: Service) -> None:
    ws, _, _ = await _welcome(service, "ned")
    await ws.send_json({"type": "token", "token": service.token("someone-else")})
    async with asyncio.timeout(3):
        while (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert ws.close_code == 1008


async def test_an_invalid_refresh_token_is_an_error_not_a_switch(service: Service) -> None:
    ws, _, _ = await _welcome(service, "ola")
    await ws.send_json({"type": "token", "token": "not-a-jwt"})
    assert (await _next(ws, "error"))["error"]["code"] == "invalid_token"
    assert not ws.closed
    await ws.close()


# -- presence ----------------------------------------------------------------------------------


async def test_presence_for_services_and_events_for_staff(service: Service) -> None:
    events: list[tuple[str, bool]] = []
    service.app[HUB].add_presence_listener(lambda user, online, at: events.append((user, online)))
    a1 = await service.connect("pat")
    a2 = await service.connect("pat")
    resp = await service.client.get("/v1/users/pat/presence", headers=service.auth())
    body = await resp.json()
    assert body["online"] is True
    assert body["connections"] == 2
    assert body["since"].endswith("Z")
    listing = await (await service.client.get("/v1/presence", headers=service.auth())).json()
    assert listing["online"] == 1
    assert listing["users"][0]["user_id"] == "pat"
    await a1.close()
    await a2.close()
    async with asyncio.timeout(2):
        while service.app[HUB].connections_of("pat"):
            await asyncio.sleep(0.01)
    body = await (await service.client.get("/v1/users/pat/presence", headers=service.auth())).json()
    assert body == {"user_id": "pat", "online": False, "connections": 0, "since": None}
    # One online event when the first connection opened, one offline when the last closed.
    assert events == [("pat", True), ("pat", False)]


# -- broadcasts and retention ----------------------------------------------------------------


async def test_broadcast_reaches_a_user_who_was_offline_once(service: Service) -> None:
    resp = await service.client.post(
        "/v1/broadcasts", json={"title": "Clinic closed Friday", "ttl": 3600}, headers=service.auth()
    )
    assert resp.status == 201
    later = await service.connect("quinn")
    assert (await later.receive_json(timeout=2))["title"] == "Clinic closed Friday"
    await later.close()
    await service.app[STORE].flush()
    again = await service.connect("quinn")
    await _silent(again)
    await again.close()
    # A v1 client receives it too, and its ack records the receipt.
    ws, _, replayed = await _welcome(service, "rae")
    assert [f["title"] for f in replayed] == ["Clinic closed Friday"]
    await ws.send_json({"type": "ack", "ids": [replayed[0]["id"]]})
    assert (await _next(ws, "ack"))["ids"] == [replayed[0]["id"]]
    await ws.close()
    ws, _, replayed = await _welcome(service, "rae")
    assert replayed == []
    await ws.close()


@pytest.mark.sqlite_file
async def test_nothing_expired_is_served_and_purge_deletes_it(make_service: Any) -> None:
    clock = ManualClock()
    service: Service = await make_service(clock=clock)
    svc = service.app[SERVICE]
    await svc.send(
        [NotificationDraft(user_id="sam", type="t", title="soon gone", message="m", data={}, ttl_seconds=1)]
    )
    await svc.broadcast_system_notification("old news", "m", ttl_seconds=1)
    kept = await service.send("sam", "kept")
    clock.advance(2)
    # Expired but not yet purged: never served anywhere.
    ws = await service.connect("sam")
    assert (await ws.receive_json(timeout=2))["id"] == kept["id"]
    await _silent(ws)
    await ws.close()
    resp = await service.client.get("/v1/users/sam/notifications", headers=service.auth())
    assert [n["title"] for n in (await resp.json())["notifications"]] == ["kept"]
    assert await purge_once(service.app[STORE]) == 2
    with sqlite3.connect(service.settings.db_path) as conn:
        titles = [r[0] for r in conn.execute("SELECT title FROM notifications")]
    assert titles == ["kept"]


async def test_retention_follows_priority_with_critical_kept_longest(service: Service) -> None:
    svc = service.app[SERVICE]
    stored = {
        p: (
            await svc.send(
                [NotificationDraft(user_id="tia", type="t", title=p, message="m", data={}, priority=p)]
            )
        )[0]
        for p in ("low", "normal", "high", "critical")
    }
    lifetimes = {p: (n.expires_at - n.created_at).days for p, n in stored.items() if n.expires_at}
    assert lifetimes == dict(service.settings.retention_days)
    assert lifetimes["critical"] == max(lifetimes.values())


async def test_retention_by_type_replaces_the_priority_s_and_is_purged_on_it(make_service: Any) -> None:
    clock = ManualClock()
    service: Service = await make_service(
        clock=clock, retention_days_by_type=(("appointment_reminder", 2), ("lab_result_ready", 3650))
    )
    svc = service.app[SERVICE]

    def draft(title: str, kind: str, priority: Any, ttl: int | None = None) -> NotificationDraft:
        return NotificationDraft(
            user_id="uma", type=kind, title=title, message="m", data={}, priority=priority, ttl_seconds=ttl
        )

    stored = await svc.send(
        [
            draft("Tomorrow 9:00", "appointment_reminder", "critical"),
            draft("Result ready", "lab_result_ready", "low"),
            draft("Hello", "appointment_confirmed", "low"),
            draft("Own", "appointment_reminder", "normal", ttl=10 * 24 * 3600),
        ]
    )
    days = {n.title: (n.expires_at - n.created_at).days for n in stored if n.expires_at}
    assert days == {"Tomorrow 9:00": 2, "Result ready": 3650, "Hello": 30, "Own": 10}
    clock.advance(3 * 24 * 3600)
    assert await purge_once(service.app[STORE]) == 1
    resp = await service.client.get("/v1/users/uma/notifications", headers=service.auth())
    assert {n["title"] for n in (await resp.json())["notifications"]} == {"Result ready", "Hello", "Own"}
