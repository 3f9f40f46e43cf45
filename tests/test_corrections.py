"""Corrections: a notification retracted (sent in error) or updated, through the HTTP API, to real
v1 clients: live on every device of the user, on resume for one that was offline (exactly once, in
seq order), never to another user, gone from history and unread counts, audited without content,
and durable across a kill -9 of a real server process."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diagnoxix.keys import SERVICE, STORE
from diagnoxix.rules import validated_draft
from diagnoxix_client import NotifyClient, NotifyError, Subscriber

from .conftest import Service
from .dashboard_support import StaffClient, start_server
from .processes import Launcher, create_api_key

FRAME_TIMEOUT = 5.0


async def frame_of(ws: Any, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
    return await ws.receive_json(timeout=timeout)  # type: ignore[no-any-return]


async def until(ws: Any, kind: str) -> list[dict[str, Any]]:
    """Frames up to and including the first of type `kind`."""
    seen: list[dict[str, Any]] = []
    while True:
        seen.append(await frame_of(ws))
        if seen[-1]["type"] == kind:
            return seen


async def silent(ws: Any, seconds: float = 0.4) -> None:
    try:
        msg = await ws.receive(timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected nothing, got {msg.type}: {msg.data!r}")


async def live(service: Service, user_id: str, since: int = 0) -> tuple[Any, dict[str, Any]]:
    """A v1 client resumed from `since`: (socket, its welcome)."""
    ws = await service.connect(user_id, v1=True, since=since)
    frames = await until(ws, "welcome")
    return ws, frames[-1]


async def retract(service: Service, nid: str, reason: str = "sent to the wrong patient") -> Any:
    return await service.client.post(
        f"/v1/notifications/{nid}/retract", json={"reason": reason}, headers=service.auth()
    )


async def update(service: Service, nid: str, **body: Any) -> Any:
    body.setdefault("reason", "wrong time in the message")
    return await service.client.patch(f"/v1/notifications/{nid}", json=body, headers=service.auth())


async def history(service: Service, user_id: str) -> list[dict[str, Any]]:
    resp = await service.client.get(f"/v1/users/{user_id}/notifications", headers=service.auth())
    assert resp.status == 200
    return (await resp.json())["notifications"]  # type: ignore[no-any-return]


async def unread(service: Service, user_id: str) -> int:
    resp = await service.client.get(f"/v1/users/{user_id}/unread-count", headers=service.auth())
    return int((await resp.json())["unread"])


@pytest.mark.sqlite_file
async def test_a_retraction_reaches_every_device_of_the_user_and_nobody_else(service: Service) -> None:
    phone, _ = await live(service, "patient-1")
    tablet, _ = await live(service, "patient-1")
    other, _ = await live(service, "patient-2")
    plain = await service.connect("patient-1")
    keep = await service.send("patient-1", "Keep me")
    wrong = await service.send("patient-1", "Lab result for someone else", message="Private words")
    for ws in (phone, tablet, plain):
        assert [(await frame_of(ws))["id"] for _ in range(2)] == [keep["id"], wrong["id"]]

    resp = await retract(service, wrong["id"])
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["id"] == wrong["id"]
    assert body["correction"] == "retracted"
    assert body["changed"] is True
    assert body["seq"] > wrong["seq"]
    for ws in (phone, tablet):
        frame = await frame_of(ws)
        assert frame == {
            "type": "retracted",
            "id": wrong["id"],
            "user_id": "patient-1",
            "seq": body["seq"],
            "corrected_at": body["corrected_at"],
        }
        assert await frame_of(ws) == {"type": "unread", "count": 1}
    # Another user hears nothing; a plain client only ever understands notifications.
    await silent(other)
    await silent(plain)

    assert [n["id"] for n in await history(service, "patient-1")] == [keep["id"]]
    assert await unread(service, "patient-1") == 1
    phone_history = {"type": "history", "request_id": "h"}
    await phone.send_json(phone_history)
    assert [n["id"] for n in (await frame_of(phone))["notifications"]] == [keep["id"]]
    # Nothing of it can be acknowledged or read any more.
    await phone.send_json({"type": "read", "ids": [wrong["id"]], "request_id": "r"})
    assert (await until(phone, "read"))[-1]["ids"] == []

    # Retracting again is fine and changes nothing; nobody is told twice.
    again = await retract(service, wrong["id"], "double click")
    assert again.status == 200
    assert (await again.json()) | {"changed": True} == body
    assert not (await again.json())["changed"]
    await silent(phone)
    # Its words are gone from the database file, not just from the answers.
    await service.app[STORE].flush()
    assert b"Private words" not in service.settings.db_path.read_bytes()
    for ws in (phone, tablet, other, plain):
        await ws.close()


async def test_an_update_reaches_live_clients_and_changes_history(service: Service) -> None:
    phone, _ = await live(service, "patient-3")
    other, _ = await live(service, "patient-4")
    note = await service.send("patient-3", "Appointment Confirmed", message="Tomorrow at 2:00 PM")
    assert (await frame_of(phone))["id"] == note["id"]

    resp = await update(service, note["id"], message="Tomorrow at 3:00 PM")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["title"], body["message"], body["correction"]) == (
        "Appointment Confirmed",
        "Tomorrow at 3:00 PM",
        "updated",
    )
    frame = await frame_of(phone)
    assert frame["type"] == "updated"
    assert frame["id"] == note["id"]
    assert frame["seq"] == body["seq"]
    assert (frame["title"], frame["message"]) == ("Appointment Confirmed", "Tomorrow at 3:00 PM")
    await silent(phone)  # the unread count did not change
    await silent(other)
    (stored,) = await history(service, "patient-3")
    assert (stored["title"], stored["message"], stored["seq"]) == (
        "Appointment Confirmed",
        "Tomorrow at 3:00 PM",
        note["seq"],
    )

    # Retracted, it can no longer be updated.
    assert (await retract(service, note["id"])).status == 200
    refused = await update(service, note["id"], title="Too late")
    assert refused.status == 409
    assert (await refused.json())["error"]["code"] == "notification_retracted"
    await phone.close()
    await other.close()


async def test_an_offline_client_learns_on_resume_exactly_once_in_seq_order(service: Service) -> None:
    phone, _ = await live(service, "patient-5")
    first = await service.send("patient-5", "First")
    second = await service.send("patient-5", "Second")
    assert [(await frame_of(phone))["seq"] for _ in range(2)] == [first["seq"], second["seq"]]
    await phone.close()
    cursor = second["seq"]

    # While it is away: one retracted, one updated, one new, and someone else's corrected.
    stranger = await service.send("patient-6", "Not yours")
    retracted = await (await retract(service, first["id"])).json()
    updated = await (await update(service, second["id"], title="Second, corrected")).json()
    third = await service.send("patient-5", "Third")
    assert (await retract(service, stranger["id"])).status == 200

    phone, welcome = await live(service, "patient-5", since=cursor)
    # `live` consumed the replay; connect again to look at it.
    await phone.close()
    ws = await service.connect("patient-5", v1=True, since=cursor)
    replay = await until(ws, "welcome")
    assert [(f["type"], f.get("seq")) for f in replay[:-1]] == [
        ("retracted", retracted["seq"]),
        ("updated", updated["seq"]),
        (third["type"], third["seq"]),
    ]
    assert replay[1]["title"] == "Second, corrected"
    assert replay[-1]["replayed"] == 3
    assert replay[-1]["recovered"] is True
    assert replay[-1]["unread"] == 2
    await ws.close()

    # A client whose cursor is past a correction never gets it again.
    ws = await service.connect("patient-5", v1=True, since=retracted["seq"])
    replay = await until(ws, "welcome")
    assert [f["type"] for f in replay[:-1]] == ["updated", third["type"]]
    await ws.close()
    ws = await service.connect("patient-5", v1=True, since=welcome["last_seq"])
    assert [f["type"] for f in await until(ws, "welcome")] == ["welcome"]
    await ws.close()

    # Without a cursor, a client holds nothing to correct: it gets its offline queue only.
    ws = await service.connect("patient-5", v1=True)
    await ws.send_json({"type": "hello"})
    kinds = [f["type"] for f in await until(ws, "welcome")]
    assert "retracted" not in kinds
    assert "updated" not in kinds
    await ws.close()


async def test_a_broadcast_is_retractable_and_leaves_everyone(service: Service) -> None:
    one, _ = await live(service, "patient-7")
    two, _ = await live(service, "patient-8")
    resp = await service.client.post(
        "/v1/broadcasts", json={"title": "Maintenance", "message": "wrong night"}, headers=service.auth()
    )
    sent = (await resp.json())["notification"]
    for ws in (one, two):
        assert (await frame_of(ws))["id"] == sent["id"]
    body = await (await retract(service, sent["id"], "wrong date")).json()
    for ws in (one, two):
        frame = await frame_of(ws)
        assert (frame["type"], frame["id"], frame["user_id"]) == ("retracted", sent["id"], "*")
        await silent(ws)  # a broadcast carries no read state: no unread frame
    assert await history(service, "patient-7") == []
    # Someone who held it and was offline learns on resume.
    ws = await service.connect("patient-9", v1=True, since=sent["seq"])
    replay = await until(ws, "welcome")
    assert [(f["type"], f.get("seq")) for f in replay[:-1]] == [("retracted", body["seq"])]
    for sock in (one, two, ws):
        await sock.close()


async def test_corrections_are_audited_without_content_and_refused_without_a_key(service: Service) -> None:
    note = await service.send("patient-10", "Secret title", message="Secret message")
    assert (
        await update(service, note["id"], title="Secret new title", reason="typo in the time")
    ).status == 200
    assert (await retract(service, note["id"], "sent to the wrong patient")).status == 200
    await service.app[STORE].flush()
    entries = await service.app[STORE].audit_entries(limit=10)
    fixes = [e for e in entries if e["action"] in {"notification.update", "notification.retract"}]
    assert [e["action"] for e in fixes] == ["notification.retract", "notification.update"]
    assert all(e["actor"].startswith("apikey:") and e["target"] == "patient-10" for e in fixes)
    assert fixes[0]["details"]["reason"] == "sent to the wrong patient"
    assert fixes[0]["details"]["id"] == note["id"]
    assert "Secret" not in json.dumps(entries)

    # A patient's token may not correct anything; nor may anyone without credentials.
    token = service.token("patient-10")
    other = await service.send("patient-10", "Mine")
    for headers in ({"Authorization": f"Bearer {token}"}, {}):
        resp = await service.client.post(
            f"/v1/notifications/{other['id']}/retract", json={"reason": "x"}, headers=headers
        )
        assert resp.status == 401
    # Bad input is a 4xx naming the problem, never a 5xx.
    cases = [
        (f"/v1/notifications/{other['id']}/retract", "POST", {}, 422),
        (f"/v1/notifications/{other['id']}/retract", "POST", {"reason": " "}, 422),
        (f"/v1/notifications/{other['id']}/retract", "POST", {"reason": "x" * 501}, 422),
        (f"/v1/notifications/{other['id']}/retract", "POST", {"reason": "x", "extra": 1}, 422),
        ("/v1/notifications/no-such-id/retract", "POST", {"reason": "x"}, 404),
        (f"/v1/notifications/{other['id']}", "PATCH", {"reason": "x"}, 422),
        (f"/v1/notifications/{other['id']}", "PATCH", {"title": "", "reason": "x"}, 422),
        (f"/v1/notifications/{other['id']}", "PATCH", {"message": None, "reason": "x"}, 422),
        (f"/v1/notifications/{other['id']}", "PATCH", {"title": "t"}, 422),
        ("/v1/notifications/no-such-id", "PATCH", {"title": "t", "reason": "x"}, 404),
    ]
    for path, method, body, status in cases:
        resp = await service.client.request(method, path, json=body, headers=service.auth())
        assert resp.status == status, (path, body, await resp.text())
    assert [n["id"] for n in await history(service, "patient-10")] == [other["id"]]


async def test_seqs_stay_unique_after_a_retraction_of_the_newest(service: Service) -> None:
    note = await service.send("patient-11", "Newest")
    body = await (await retract(service, note["id"])).json()
    after = await service.send("patient-11", "After")
    assert after["seq"] > body["seq"] > note["seq"]


# -- a real server process -------------------------------------------------------------------


async def test_a_retraction_survives_kill_9_before_the_client_reconnects(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "notify.sqlite3"
    server = await launcher.start(db)
    _, key = await create_api_key(db)
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:

        async def token() -> str:
            async with http.post(
                f"{server.url}/v1/tokens", json={"user_id": "patient-12"}, headers=auth
            ) as r:
                return str((await r.json())["token"])

        async with http.ws_connect(
            f"{server.ws_url}?since=0&token={await token()}", protocols=("diagnoxix.v1",)
        ) as ws:
            assert (await ws.receive_json(timeout=FRAME_TIMEOUT))["type"] == "welcome"
            async with http.post(
                f"{server.url}/v1/notifications",
                json={"user_id": "patient-12", "title": "Wrong patient", "message": "Private"},
                headers=auth,
            ) as r:
                note = (await r.json())["notification"]
            assert (await ws.receive_json(timeout=FRAME_TIMEOUT))["id"] == note["id"]
        async with http.post(
            f"{server.url}/v1/notifications/{note['id']}/retract",
            json={"reason": "wrong patient"},
            headers=auth,
        ) as r:
            assert r.status == 200
            fix = await r.json()
        assert await server.crash() == -signal.SIGKILL

        server = await launcher.start(db)
        async with http.ws_connect(
            f"{server.ws_url}?since={note['seq']}&token={await token()}", protocols=("diagnoxix.v1",)
        ) as ws:
            first = await ws.receive_json(timeout=FRAME_TIMEOUT)
            assert (first["type"], first["id"], first["seq"]) == ("retracted", note["id"], fix["seq"])
            welcome = await ws.receive_json(timeout=FRAME_TIMEOUT)
            assert welcome["type"] == "welcome"
            assert welcome["recovered"] is True
            assert welcome["unread"] == 0
            assert welcome["last_seq"] >= fix["seq"]
        async with http.get(f"{server.url}/v1/users/patient-12/notifications", headers=auth) as r:
            assert (await r.json())["notifications"] == []
        # The retraction's seq is never handed out again.
        async with http.post(
            f"{server.url}/v1/notifications", json={"user_id": "patient-12", "title": "Next"}, headers=auth
        ) as r:
            assert (await r.json())["notification"]["seq"] > fix["seq"]
    await asyncio.sleep(0)


async def test_the_python_client_drops_a_retracted_one_and_hands_over_new_words(service: Service) -> None:
    base = str(service.client.make_url("/")).rstrip("/")
    heard: list[tuple[str, str]] = []

    async def token() -> str:
        return service.token("patient-13")

    async def on_retracted(frame: dict[str, Any]) -> None:
        heard.append(("retracted", frame["id"]))

    def on_updated(frame: dict[str, Any]) -> None:
        heard.append(("updated", frame["id"]))

    async with (
        NotifyClient(base, service.api_key) as notify,
        Subscriber(base, token, since=0, on_retracted=on_retracted, on_updated=on_updated) as sub,
    ):
        for _ in range(100):  # until it is live
            if sub.welcomes:
                break
            await asyncio.sleep(0.02)
        wrong = await notify.send("patient-13", "Wrong patient")
        moved = await notify.send("patient-13", "Appointment", "at 2:00 PM")
        # The application has taken neither yet when both are corrected.
        assert (await notify.retract(wrong["id"], "wrong patient"))["changed"] is True
        assert (await notify.update(moved["id"], message="at 3:00 PM", reason="moved"))[
            "message"
        ] == "at 3:00 PM"
        for _ in range(100):
            if len(heard) == 2:
                break
            await asyncio.sleep(0.02)
        assert heard == [("retracted", wrong["id"]), ("updated", moved["id"])]
        got = await sub.next(wait_seconds=2)
        assert (got["id"], got["message"]) == (moved["id"], "at 3:00 PM")
        with pytest.raises(TimeoutError):
            await sub.next(wait_seconds=0.3)
        assert sub.last_seq is not None
        assert sub.last_seq > moved["seq"]
        with pytest.raises(NotifyError) as refused:
            await notify.update(wrong["id"], title="Again", reason="x")
        assert (refused.value.status, refused.value.code) == (409, "notification_retracted")


# -- the dashboard ---------------------------------------------------------------------------


async def test_the_dashboard_retracts_with_a_reason_and_the_form_token_only(tmp_path: Path) -> None:
    server = await start_server(tmp_path)
    staff = StaffClient(server)
    try:
        assert (await staff.login()).status == 303
        async with aiohttp.ClientSession() as http:
            phone = await http.ws_connect(
                f"{server.ws_url}?since=0&token={server.token('patient-14')}", protocols=("diagnoxix.v1",)
            )
            assert (await frame_of(phone))["type"] == "welcome"
            note = await server.app[SERVICE].create_and_send_notification(
                "patient-14", "lab_result_ready", "Wrong patient", "Private"
            )
            assert (await frame_of(phone))["id"] == note.id
            page = await (await staff.get("/dashboard/users/patient-14")).text()
            path = f"/dashboard/notifications/{note.id}/retract"
            assert f'action="{path}"' in page
            form = await staff.csrf("/dashboard/users/patient-14")
            # Forged (no token, another site's Origin) or without a reason: nothing happens.
            assert (await staff.post(path, {"csrf_token": "0" * 64, "reason": "x"})).status == 403
            forged = {"csrf_token": form, "reason": "x"}
            assert (await staff.post(path, forged, origin="https://evil.example")).status == 403
            assert (await staff.post(path, {"csrf_token": form, "reason": " "})).status == 400
            await silent(phone)
            resp = await staff.post(
                path, {"csrf_token": form, "reason": "sent to the wrong patient", "back": "user"}
            )
            assert resp.status == 303
            assert resp.headers["Location"].startswith("/dashboard/users/patient-14?retracted=")
            frame = await frame_of(phone)
            assert (frame["type"], frame["id"]) == ("retracted", note.id)
            page = await (await staff.get(resp.headers["Location"])).text()
            assert "Retracted notification" in page
            assert "Wrong patient" not in page
            listing = await (await staff.get("/dashboard/notifications")).text()
            assert note.id not in listing.replace(f"retracted={note.id}", "")
            await phone.close()
        store = server.app[STORE]
        await store.flush()
        (entry,) = [
            e
            for e in await store.audit_page(before_id=None, limit=50)
            if e["action"] == "notification.retract"
        ]
        assert entry["actor"].startswith("staff:")
        assert entry["target"] == "patient-14"
        assert entry["details"]["reason"] == "sent to the wrong patient"
    finally:
        await staff.close()
        await server.close()


async def test_a_correction_that_is_the_newest_event_is_replayed_and_counted_in_last_seq(
    service: Service,
) -> None:
    note = await service.send("patient-15", "Only one")
    body = await (await retract(service, note["id"])).json()
    ws = await service.connect("patient-15", v1=True, since=note["seq"])
    first, welcome = await until(ws, "welcome")
    assert (first["type"], first["seq"]) == ("retracted", body["seq"])
    # The watermark covers the correction: the cursor the client now holds is not "ahead".
    assert welcome["last_seq"] == body["seq"]
    assert welcome["recovered"] is True
    await ws.close()
    ws = await service.connect("patient-15", v1=True, since=body["seq"])
    (welcome,) = await until(ws, "welcome")
    assert welcome["recovered"] is True
    assert welcome["replayed"] == 0
    await ws.close()


async def test_corrections_and_notifications_reach_a_live_client_in_seq_order(service: Service) -> None:
    """Retractions committed while other sends commit around them: the live client gets every
    frame of its stream in strictly increasing seq order. A correction fanned out after a later
    notification would be lost on that device for good: its cursor would already be past it."""
    user, rounds = "patient-16", 80
    svc, store = service.app[SERVICE], service.app[STORE]
    targets = await svc.send(
        [validated_draft(user, "t", f"old {i}", "m", None, "normal") for i in range(rounds)]
    )
    ws, _ = await live(service, user, since=targets[-1].seq)
    # A busy event loop (here: a slow listener after each commit) lets the writer thread commit
    # the next batch before the loop has answered the writers of this one.
    store.add_commit_listener(lambda notes: time.sleep(0.003))

    async def retract_all() -> None:
        for note in targets:
            assert (await svc.retract(store, note.id)).outcome == "done"

    async def send_some(stream: int) -> None:
        for i in range(rounds // 4):
            await svc.send([validated_draft(user, "t", f"new {stream}.{i}", "m", None, "normal")])

    # Four streams of sends around one of retractions: each commit has writes queued behind it.
    await asyncio.gather(retract_all(), *(send_some(stream) for stream in range(4)))
    seqs: list[int] = []
    kinds = {"retracted": 0, "t": 0}
    while sum(kinds.values()) < 2 * rounds:
        frame = await frame_of(ws)
        if frame["type"] in kinds:
            kinds[frame["type"]] += 1
            seqs.append(frame["seq"])
    assert kinds == {"retracted": rounds, "t": rounds}
    assert seqs == sorted(set(seqs)), "frames out of seq order, or twice"
    await ws.close()
