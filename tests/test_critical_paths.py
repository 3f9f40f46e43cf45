"""Every path that stores a critical notification opens a critical item, exactly once: the
in-process typed senders, the dashboard's Send form, and scheduled sends (when they are due, in the
transaction that finishes their job; never once cancelled). Real servers, a real SQLite file, real
WebSocket clients; a `ManualClock` moves time for scheduled sends."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.delivery.scheduled import ScheduledSends
from diagnoxix.keys import CRITICAL, SERVICE, STORE
from diagnoxix.models import format_timestamp
from diagnoxix.store.protocols import IdempotencyConflict

from .conftest import Service
from .dashboard_support import ADMIN, LiveServer, StaffClient, start_server

MakeService = Callable[..., Awaitable[Service]]


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def _items(db: Path) -> list[tuple[Any, ...]]:
    return _rows(db, "SELECT id, owner, target, state, requires_ack FROM critical_items ORDER BY created_at")


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _welcomed(svc: Service, user: str) -> Any:
    ws = await svc.connect(user, v1=True, since=0)
    async with asyncio.timeout(3):
        while json.loads((await ws.receive()).data)["type"] != "welcome":
            pass
    return ws


async def _notifications(ws: Any, seconds: float) -> list[dict[str, Any]]:
    """Every notification frame arriving within `seconds`."""
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                frame: dict[str, Any] = json.loads((await ws.receive()).data)
                if "seq" in frame and frame.get("priority"):
                    found.append(frame)
    except TimeoutError:
        return found


# -- in-process --------------------------------------------------------------------------------


async def test_in_process_typed_senders_open_an_item_for_a_critical_send_only(service: Service) -> None:
    notify = service.app[SERVICE]
    db = service.settings.db_path
    ws = await _welcomed(service, "dr-lee")
    note = await notify.create_and_send_notification(
        "dr-lee", "lab_critical", "Critical value", "Open the portal", priority="critical"
    )
    ai = await notify.send_ai_analysis_notification(
        "dr-lee", "ct_head", "an-1", priority="critical", sender="apikey:pacs"
    )
    await notify.create_and_send_notification("dr-lee", "note", "Plain", "Not tracked", priority="high")
    await notify.broadcast_system_notification("Maintenance", "Tonight", priority="critical")
    items = _items(db)
    assert [(owner, target, state, ack) for _, owner, target, state, ack in items] == [
        ("service", "user:dr-lee", "open", 1),
        ("apikey:pacs", "user:dr-lee", "open", 1),
    ]
    store = service.app[STORE]
    first, second = await store.critical_item_of(note.id), await store.critical_item_of(ai.id)
    assert first is not None
    assert first.id == items[0][0]
    assert second is not None
    assert second.id == items[1][0]
    # Exactly once: one copy per item, one frame each on the socket (plus the plain one).
    frames = await _notifications(ws, 0.5)
    assert sorted(
        f["id"] for f in frames if f["priority"] == "critical" and f["user_id"] == "dr-lee"
    ) == sorted([note.id, ai.id])
    assert len([f for f in frames if f["user_id"] == "dr-lee"]) == 3
    assert [len(await store.critical_copies(i[0])) for i in items] == [1, 1]
    await ws.close()


# -- the dashboard's Send form -----------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = await start_server(tmp_path)
    yield live
    await live.close()


async def test_the_dashboards_send_form_opens_an_item_for_a_critical_send(server: LiveServer) -> None:
    staff = StaffClient(server)
    try:
        assert (await staff.login()).status == 303
        form = {
            "csrf_token": await staff.csrf(),
            "target": "user",
            "kind": "custom",
            "user_id": "dr-lee",
            "type": "lab_critical",
            "title": "Potassium 6.8",
            "message": "Call the lab",
            "priority": "critical",
        }
        resp = await staff.post("/dashboard/send", form)
        assert resp.status == 303, await resp.text()
        location = resp.headers["Location"]
        sent_id = location.rsplit("=", 1)[1]
        items = _items(server.settings.db_path)
        assert [(owner, target, state) for _, owner, target, state, _ in items] == [
            (f"staff:{ADMIN}", "user:dr-lee", "open")
        ]
        item = await server.app[STORE].critical_item_of(sent_id)
        assert item is not None
        assert item.id == items[0][0]
        page = await (await staff.get(location)).text()
        assert f'data-sent-critical="{item.id}"' in page
        assert f'href="/dashboard/critical/{item.id}"' in page
        # A normal one opens none.
        form = {**form, "csrf_token": await staff.csrf(), "priority": "normal"}
        assert (await staff.post("/dashboard/send", form)).status == 303
        assert len(_items(server.settings.db_path)) == 1
        histories = _rows(
            server.settings.db_path, "SELECT count(*) FROM notifications WHERE user_id = 'dr-lee'"
        )
        assert histories == [(2,)]
    finally:
        await staff.close()


# -- scheduled sends ---------------------------------------------------------------------------


def _at(clock: ManualClock, seconds: float) -> str:
    return format_timestamp(clock.now() + timedelta(seconds=seconds))


async def _schedule(svc: Service, body: dict[str, Any]) -> dict[str, Any]:
    resp = await svc.client.post("/v1/notifications", json=body, headers=svc.auth())
    assert resp.status == 202, await resp.text()
    return (await resp.json())["scheduled"]  # type: ignore[no-any-return]


async def _schedule_view(svc: Service, schedule_id: str) -> dict[str, Any]:
    resp = await svc.client.get(f"/v1/scheduled/{schedule_id}", headers=svc.auth())
    assert resp.status == 200, await resp.text()
    return (await resp.json())["scheduled"]  # type: ignore[no-any-return]


async def test_a_scheduled_critical_send_opens_its_item_when_due_exactly_once(
    make_service: MakeService,
) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    db = svc.settings.db_path
    ws = await _welcomed(svc, "dr-lee")
    body = {"user_id": "dr-lee", "type": "lab_critical", "title": "K 6.8", "message": "Call the lab"}
    critical = await _schedule(svc, {**body, "priority": "critical", "deliver_at": _at(clock, 60)})
    # `requires_ack` with `deliver_at` is taken now (it was a 422): an item when due, too.
    acked = await _schedule(svc, {**body, "requires_ack": True, "deliver_at": _at(clock, 60)})
    store = svc.app[STORE]
    owner = _rows(db, "SELECT owner FROM timers WHERE id = ?", critical["id"])[0][0]
    (job,) = await store.get_timers(owner, [critical["id"]])
    assert _items(db) == []
    clock.advance(60)

    async def both_sent() -> bool:
        views = [await _schedule_view(svc, s["id"]) for s in (critical, acked)]
        return all(v["state"] == "sent" for v in views)

    await _until(both_sent)
    items = _items(db)
    assert sorted((o, t, s, a) for _, o, t, s, a in items) == [(owner, "user:dr-lee", "open", 1)] * 2
    views = [await _schedule_view(svc, s["id"]) for s in (critical, acked)]
    assert sorted(v["critical_id"] for v in views) == sorted(i[0] for i in items)
    frames = await _notifications(ws, 0.5)
    assert len(frames) == 2
    for frame in frames:
        item = await store.critical_item_of(frame["id"])
        assert item is not None
        assert item.state == "open"
    # The job run again (a crash after its commit, or a race) opens nothing more.
    handler = ScheduledSends(svc.app[SERVICE], store, svc.app[CRITICAL])
    with pytest.raises(IdempotencyConflict):
        await handler(job)
    assert len(_items(db)) == 2
    assert await _notifications(ws, 0.3) == []
    await ws.close()


async def test_a_cancelled_scheduled_critical_send_opens_no_item(make_service: MakeService) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock)
    db = svc.settings.db_path
    body = {"user_id": "dr-lee", "title": "K 6.8", "message": "Call the lab", "priority": "critical"}
    scheduled = await _schedule(svc, {**body, "deliver_at": _at(clock, 60)})
    owner = _rows(db, "SELECT owner FROM timers WHERE id = ?", scheduled["id"])[0][0]
    (job,) = await svc.app[STORE].get_timers(owner, [scheduled["id"]])
    resp = await svc.client.delete(f"/v1/scheduled/{scheduled['id']}", headers=svc.auth())
    assert resp.status == 200, await resp.text()
    # Even run by a scheduler that read it before the cancellation: its claim is taken.
    handler = ScheduledSends(svc.app[SERVICE], svc.app[STORE], svc.app[CRITICAL])
    with pytest.raises(IdempotencyConflict):
        await handler(job)
    clock.advance(120)
    await asyncio.sleep(0.2)
    assert _items(db) == []
    assert _rows(db, "SELECT count(*) FROM notifications") == [(0,)]
