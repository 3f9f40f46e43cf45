"""Scheduled sends: `deliver_at` on POST /v1/notifications, `/v1/scheduled`, and exactly once.

A real server with a `ManualClock` where time matters (moved, never waited for), and real
`run.py` processes killed with SIGKILL around the due time, checked in their database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.keys import API_KEYS, STORE
from diagnoxix.models import format_timestamp

from .conftest import Service
from .processes import Launcher, Server, create_api_key

MakeService = Callable[..., Awaitable[Service]]


def _at(clock: ManualClock | None, seconds: float) -> str:
    now = clock.now() if clock is not None else datetime.now(UTC)
    return format_timestamp(now + timedelta(seconds=seconds))


def _item(user: str, deliver_at: str, title: str = "Appointment tomorrow", **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "title": title,
        "message": "See you at 2:00 PM",
        "deliver_at": deliver_at,
        **extra,
    }


async def _post(svc: Service, body: Any, *, status: int = 202, headers: dict[str, str] | None = None) -> Any:
    resp = await svc.client.post("/v1/notifications", json=body, headers={**svc.auth(), **(headers or {})})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _get(svc: Service, path: str, *, status: int = 200, key: str | None = None) -> Any:
    resp = await svc.client.get(path, headers={"Authorization": f"Bearer {key or svc.api_key}"})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _delete(svc: Service, path: str, *, status: int = 200, key: str | None = None) -> Any:
    resp = await svc.client.delete(path, headers={"Authorization": f"Bearer {key or svc.api_key}"})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _state(svc: Service, schedule_id: str) -> str:
    return str((await _get(svc, f"/v1/scheduled/{schedule_id}"))["scheduled"]["state"])


async def _v1_welcome(svc: Service, user: str) -> Any:
    ws = await svc.connect(user, v1=True, since=0)
    async with asyncio.timeout(3):
        while json.loads((await ws.receive()).data)["type"] != "welcome":
            pass
    return ws


async def _next_notification(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame: dict[str, Any] = json.loads((await ws.receive()).data)
            if "seq" in frame and frame.get("user_id"):
                return frame


async def _silent(ws: Any, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await _next_notification(ws, seconds)


# -- scheduling and sending ------------------------------------------------------------------


async def test_a_scheduled_send_goes_out_when_due_to_a_v1_client(make_service: MakeService) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    ws = await _v1_welcome(svc, "patient-1")
    body = await _post(svc, _item("patient-1", _at(clock, 3600), schedule_key="appointment-456-reminder"))
    scheduled = body["scheduled"]
    assert scheduled["state"] == "pending"
    assert scheduled["schedule_key"] == "appointment-456-reminder"
    assert scheduled["user_id"] == "patient-1"
    assert scheduled["notification_id"] is None
    assert "title" not in scheduled
    assert "message" not in scheduled
    await _silent(ws)
    clock.advance(3599)
    await _silent(ws)
    clock.advance(1)
    frame = await _next_notification(ws)
    assert (frame["title"], frame["message"]) == ("Appointment tomorrow", "See you at 2:00 PM")
    await _until(lambda: _is(svc, scheduled["id"], "sent"))
    sent = (await _get(svc, f"/v1/scheduled/{scheduled['id']}"))["scheduled"]
    assert sent["notification_id"] == frame["id"]
    await _silent(ws)
    # An ordinary notification from then on: in history, counted unread.
    history = await _get(svc, "/v1/users/patient-1/notifications")
    assert [n["id"] for n in history["notifications"]] == [frame["id"]]
    await ws.close()


async def _is(svc: Service, schedule_id: str, state: str) -> bool:
    return await _state(svc, schedule_id) == state


async def test_typed_items_and_batches_are_scheduled_each_with_its_own_schedule(
    make_service: MakeService,
) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    due = _at(clock, 60)
    typed = {
        "kind": "lab_result",
        "user_id": "p2",
        "test_name": "Lipid Panel",
        "abnormal": False,
        "deliver_at": due,
    }
    body = await _post(svc, {"notifications": [typed, _item("p3", due, schedule_key="k-3")]})
    assert body["count"] == 2
    assert [s["type"] for s in body["scheduled"]] == ["lab_result_ready", "notification"]
    clock.advance(60)

    async def all_sent() -> bool:
        return all([await _is(svc, s["id"], "sent") for s in body["scheduled"]])

    await _until(all_sent)
    (lab,) = (await _get(svc, "/v1/users/p2/notifications"))["notifications"]
    assert lab["message"] == "Your Lipid Panel result is ready to view."  # worded when scheduled


@pytest.mark.parametrize(
    ("deliver_at", "problem"),
    [
        ("2020-01-01T09:00:00Z", "must be in the future"),
        ("+400 days", "must be at most 365 days ahead"),
        ("2030-01-01T09:00:00", "must be an RFC 3339 date-time"),  # no offset
        ("2030-02-31T09:00:00Z", "must be an RFC 3339 date-time"),
        ("tomorrow", "must be an RFC 3339 date-time"),
        (1893456000, "must be an RFC 3339 date-time"),
    ],
)
async def test_a_past_far_or_malformed_deliver_at_is_a_422(
    make_service: MakeService, deliver_at: Any, problem: str
) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    if deliver_at == "+400 days":
        deliver_at = _at(clock, 400 * 86400)
    body = await _post(svc, _item("p", deliver_at), status=422)
    assert body["error"]["details"]["deliver_at"].startswith(problem)
    assert (await _get(svc, "/v1/scheduled"))["scheduled"] == []


async def test_the_whole_draft_is_validated_when_it_is_scheduled(make_service: MakeService) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    due = _at(clock, 60)
    body = await _post(svc, {"user_id": "p", "title": " ", "deliver_at": due}, status=422)
    assert "title" in body["error"]["details"]
    typed = {
        "kind": "lab_result",
        "user_id": "p",
        "test_name": "CBC",
        "abnormal": True,
        "title": "x",
        "deliver_at": due,
    }
    body = await _post(svc, typed, status=422)
    assert "title" in body["error"]["details"]
    mixed = {"notifications": [_item("p", due), {"user_id": "q", "title": "now"}]}
    body = await _post(svc, mixed, status=422)
    assert "notifications[1].deliver_at" in body["error"]["details"]
    body = await _post(svc, {"user_id": "p", "title": "t", "schedule_key": "k"}, status=422)
    assert "schedule_key" in body["error"]["details"]
    twice = {"notifications": [_item("p", due, schedule_key="k"), _item("q", due, schedule_key="k")]}
    body = await _post(svc, twice, status=422)
    assert "notifications[1].schedule_key" in body["error"]["details"]
    body = await _post(svc, _item("p", due, schedule_key="bad key!"), status=422)
    assert "schedule_key" in body["error"]["details"]
    assert (await _get(svc, "/v1/scheduled"))["scheduled"] == []


async def test_an_idempotency_key_retry_answers_with_the_same_schedules(make_service: MakeService) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    body = {"notifications": [_item("p", _at(clock, 60)), _item("q", _at(clock, 90))]}
    first = await _post(svc, body, headers={"Idempotency-Key": "reminders-1"})
    resp = await svc.client.post(
        "/v1/notifications", json=body, headers={**svc.auth(), "Idempotency-Key": "reminders-1"}
    )
    assert resp.status == 202
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert [s["id"] for s in (await resp.json())["scheduled"]] == [s["id"] for s in first["scheduled"]]
    assert len((await _get(svc, "/v1/scheduled"))["scheduled"]) == 2


# -- listing and cancelling ------------------------------------------------------------------


async def test_cancel_by_id_and_by_key_and_too_late_is_a_409(make_service: MakeService) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    by_id = (await _post(svc, _item("p", _at(clock, 60))))["scheduled"]
    by_key = (await _post(svc, _item("p", _at(clock, 60), schedule_key="appointment-456-reminder")))[
        "scheduled"
    ]
    sent = (await _post(svc, _item("p", _at(clock, 30), schedule_key="appointment-789-reminder")))[
        "scheduled"
    ]
    taken = await _post(svc, _item("p", _at(clock, 90), schedule_key="appointment-456-reminder"), status=409)
    assert taken["error"]["code"] == "schedule_key_taken"

    cancelled = await _delete(svc, f"/v1/scheduled/{by_id['id']}")
    assert (cancelled["cancelled"], cancelled["scheduled"]["state"]) == (True, "cancelled")
    again = await _delete(svc, f"/v1/scheduled/{by_id['id']}")
    assert (again["cancelled"], again["scheduled"]["state"]) == (False, "cancelled")
    cancelled = await _delete(svc, "/v1/scheduled?key=appointment-456-reminder")
    assert (cancelled["scheduled"]["id"], cancelled["cancelled"]) == (by_key["id"], True)
    # The key is free again once its send is cancelled.
    await _post(svc, _item("p", _at(clock, 90), schedule_key="appointment-456-reminder"))

    clock.advance(30)
    await _until(lambda: _is(svc, sent["id"], "sent"))
    late = await _delete(svc, f"/v1/scheduled/{sent['id']}", status=409)
    assert late["error"]["code"] == "schedule_already_sent"
    late = await _delete(svc, "/v1/scheduled?key=appointment-789-reminder", status=409)
    assert late["error"]["code"] == "schedule_already_sent"
    await _delete(svc, "/v1/scheduled?key=never-used", status=404)
    assert (await _delete(svc, "/v1/scheduled", status=400))["error"]["code"] == "invalid_key"
    assert (await _delete(svc, "/v1/scheduled?key=no%20spaces", status=400))["error"]["code"] == "invalid_key"

    clock.advance(3600)
    await asyncio.sleep(0.2)
    history = (await _get(svc, "/v1/users/p/notifications"))["notifications"]
    assert len(history) == 2  # `sent`, and the key's second send; the cancelled ones never
    assert await _state(svc, by_id["id"]) == "cancelled"


async def test_a_keys_schedules_are_invisible_to_another_key(make_service: MakeService) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    _, other = await svc.app[API_KEYS].create("another-service")
    mine = (await _post(svc, _item("p", _at(clock, 60), schedule_key="mine")))["scheduled"]
    assert (await _get(svc, "/v1/scheduled", key=other))["scheduled"] == []
    assert (await _get(svc, f"/v1/scheduled/{mine['id']}", key=other, status=404))["error"]["code"] == (
        "schedule_not_found"
    )
    await _delete(svc, f"/v1/scheduled/{mine['id']}", key=other, status=404)
    await _delete(svc, "/v1/scheduled?key=mine", key=other, status=404)
    resp = await svc.client.get("/v1/scheduled")
    assert resp.status == 401
    assert await _state(svc, mine["id"]) == "pending"
    # The other key may use the same schedule_key for its own send.
    resp = await svc.client.post(
        "/v1/notifications",
        json=_item("p", _at(clock, 60), schedule_key="mine"),
        headers={"Authorization": f"Bearer {other}"},
    )
    assert resp.status == 202


async def test_pending_sends_are_listed_soonest_first_a_page_at_a_time(make_service: MakeService) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    ids = []
    for minutes in (50, 10, 40, 20, 30):
        ids.append((minutes, (await _post(svc, _item("p", _at(clock, minutes * 60))))["scheduled"]["id"]))
    soonest_first = [i for _, i in sorted(ids)]
    page = await _get(svc, "/v1/scheduled?limit=2")
    seen = [s["id"] for s in page["scheduled"]]
    while page["next_cursor"] is not None:
        page = await _get(svc, f"/v1/scheduled?limit=2&after={page['next_cursor']}")
        seen += [s["id"] for s in page["scheduled"]]
    assert seen == soonest_first
    await _get(svc, "/v1/scheduled?limit=0", status=400)
    await _get(svc, "/v1/scheduled?after=not-an-id", status=404)


@pytest.mark.sqlite_file
async def test_a_thousand_sends_due_at_the_same_instant_all_go_out_exactly_once(
    make_service: MakeService,
) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    due = _at(clock, 600)
    users = [f"patient-{i % 50}" for i in range(1000)]
    body = await _post(
        svc, {"notifications": [_item(u, due, title=f"Reminder {i}") for i, u in enumerate(users)]}
    )
    assert body["count"] == 1000
    clock.advance(600)
    db = svc.settings.db_path

    async def all_sent() -> bool:
        return _query(db, "SELECT count(*) FROM timers WHERE state = 'pending'") == [(0,)]

    await _until(all_sent, 30)
    await svc.app[STORE].flush()
    assert _query(db, "SELECT state, count(*) FROM timers GROUP BY state") == [("done", 1000)]
    titles = _query(db, "SELECT title, count(*) FROM notifications GROUP BY title HAVING count(*) > 1")
    assert titles == []
    assert _query(db, "SELECT count(*) FROM notifications") == [(1000,)]
    # Each schedule names its own notification.
    assert _query(db, "SELECT count(DISTINCT result) FROM timers") == [(1000,)]
    assert _query(db, "SELECT count(*) FROM timers WHERE payload LIKE '%content%'") == [(0,)]


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- kill -9 ---------------------------------------------------------------------------------


async def _schedule_http(http: aiohttp.ClientSession, server: Server, key: str, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(f"{server.url}/v1/notifications", json=body, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        return await resp.json()


async def _v1_frames(
    http: aiohttp.ClientSession, server: Server, key: str, user: str, count: int
) -> list[Any]:
    """Connect as a v1 client from the start; the notifications it gets, then nothing more."""
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(f"{server.url}/v1/tokens", json={"user_id": user}, headers=headers) as resp:
        token = (await resp.json())["token"]
    frames: list[Any] = []
    async with http.ws_connect(
        f"{server.ws_url}?since=0", protocols=("diagnoxix.v1", f"bearer.{token}")
    ) as ws:
        async with asyncio.timeout(10):
            while len(frames) < count:
                frame = json.loads((await ws.receive()).data)
                if "seq" in frame and frame.get("user_id") == user:
                    frames.append(frame)
        with pytest.raises(TimeoutError):  # and nothing twice
            await _next_notification(ws, 0.5)
    return frames


async def test_a_send_due_while_the_server_is_killed_goes_out_once_after_restart(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "notify.sqlite3"
    _, key = await create_api_key(db)
    server = await launcher.start(db)
    async with aiohttp.ClientSession() as http:
        scheduled = (await _schedule_http(http, server, key, _item("patient-k9", _at(None, 2.0))))[
            "scheduled"
        ]
        assert await server.crash() == -signal.SIGKILL
        await asyncio.sleep(
            max(0.0, (datetime.fromisoformat(scheduled["deliver_at"]) - datetime.now(UTC)).total_seconds())
            + 0.5
        )
        assert _query(db, "SELECT count(*) FROM notifications") == [(0,)]  # due, and nothing sent while down
        restarted = await launcher.start(db)
        (frame,) = await _v1_frames(http, restarted, key, "patient-k9", 1)
        assert frame["title"] == "Appointment tomorrow"
        assert await restarted.crash() == -signal.SIGKILL
    assert _query(db, "SELECT count(*) FROM notifications") == [(1,)]
    assert _query(db, "SELECT state, result FROM timers") == [
        ("done", json.dumps([frame["id"]]).replace(" ", ""))
    ]


@pytest.mark.parametrize("when", ["at the due time", "once the first is committed"])
async def test_kill_9_right_around_the_due_time_still_sends_each_exactly_once(
    launcher: Launcher, tmp_path: Path, when: str
) -> None:
    db = tmp_path / "notify.sqlite3"
    _, key = await create_api_key(db)
    server = await launcher.start(db)
    count = 300
    async with aiohttp.ClientSession() as http:
        due = _at(None, 1.5)
        items = [_item("patient-race", due, title=f"Reminder {i}") for i in range(count)]
        await _schedule_http(http, server, key, {"notifications": items})
        while datetime.now(UTC) < datetime.fromisoformat(due):
            await asyncio.sleep(0.002)
        # Killed as the jobs start, or the moment the first is seen committed (not yet delivered).
        while when != "at the due time" and _query(
            db, "SELECT count(*) FROM timers WHERE state = 'done'"
        ) == [(0,)]:
            assert datetime.now(UTC) < datetime.fromisoformat(due) + timedelta(seconds=10), "never ran"
            await asyncio.sleep(0.002)
        assert await server.crash() == -signal.SIGKILL
        done_at_kill = _query(db, "SELECT count(*) FROM timers WHERE state = 'done'")[0][0]
        restarted = await launcher.start(db)
        frames = await _v1_frames(http, restarted, key, "patient-race", count)
        assert await restarted.crash() == -signal.SIGKILL
    assert sorted(f["title"] for f in frames) == sorted(f"Reminder {i}" for i in range(count))
    assert _query(db, "SELECT count(*), count(DISTINCT title) FROM notifications") == [(count, count)]
    assert _query(db, "SELECT state, count(*) FROM timers GROUP BY state") == [("done", count)]
    # Every schedule names the one notification it stored.
    stored = {row[0] for row in _query(db, "SELECT id FROM notifications")}
    results = [json.loads(row[0]) for row in _query(db, "SELECT result FROM timers")]
    assert sorted(r[0] for r in results) == sorted(stored)
    print(f"kill {when}: {done_at_kill} of {count} done")
