"""Links and actions on notifications, through the HTTP API and real v1 clients: a portal `url` and
up to three actions are validated (https, a configured host, no user part, bounded labels),
stored with the notification, carried in its frame, its history and a resume, by typed sends,
scheduled sends and the Python clients; an action's answer (the user's own token) is recorded
once and handed to the listeners registered in app.py, with the key that sent the notification."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.delivery.actions import AnsweredAction
from diagnoxix.keys import ACTIONS, API_KEYS, SERVICE, STORE
from diagnoxix.rules import FieldErrors
from diagnoxix_client import NotifyClient, NotifyError, Subscriber, lab_result_item

from .conftest import Service

PORTAL = "portal.example.org"
URL = f"https://{PORTAL}/appointments/456"
ACTIONS_IN = [
    {"label": "Confirm", "action": "confirm"},
    {"label": "Decline", "action": "decline"},
    {"label": "Reschedule online", "url": f"https://{PORTAL}/appointments/456/reschedule"},
]


async def _linked_service(make_service: Any, **overrides: Any) -> Service:
    return await make_service(link_hosts=(PORTAL, "clinic.example"), **overrides)  # type: ignore[no-any-return]


async def _v1(service: Service, user_id: str, since: int = 0) -> Any:
    ws = await service.connect(user_id, v1=True, since=since)
    async with asyncio.timeout(3):
        while (await ws.receive_json())["type"] != "welcome":
            pass
    return ws


async def _notification_frame(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(3):
        while True:
            frame: dict[str, Any] = await ws.receive_json()
            if "seq" in frame and "id" in frame and frame["type"] not in ("retracted", "updated"):
                return frame


async def _post(service: Service, body: Any) -> Any:
    return await service.client.post("/v1/notifications", json=body, headers=service.auth())


async def _answer(service: Service, token: str, nid: str, action: str) -> Any:
    return await service.client.post(
        f"/v1/notifications/{nid}/actions/{action}", headers={"Authorization": f"Bearer {token}"}
    )


async def test_a_link_and_actions_travel_with_the_notification_to_frame_history_and_resume(
    make_service: Any,
) -> None:
    service = await _linked_service(make_service)
    ws = await _v1(service, "user-1")
    resp = await _post(
        service, {"user_id": "user-1", "title": "Your appointment", "url": URL, "actions": ACTIONS_IN}
    )
    assert resp.status == 201, await resp.text()
    sent = (await resp.json())["notification"]
    assert sent["url"] == URL
    assert sent["actions"] == ACTIONS_IN
    frame = await _notification_frame(ws)
    assert frame["id"] == sent["id"]
    assert frame["url"] == URL
    assert frame["actions"] == ACTIONS_IN
    # The sender's key is kept for the answer's route, never shown to a client.
    assert "sent_by" not in json.dumps(frame)
    assert "sent_by" not in json.dumps(sent)
    await ws.close()

    # A device that comes back resumes it from the store with the same fields.
    ws = await service.connect("user-1", v1=True, since=0)
    replayed = await _notification_frame(ws)
    assert replayed["id"] == sent["id"]
    assert replayed["url"] == URL
    assert replayed["actions"] == ACTIONS_IN
    await ws.close()
    page = await service.client.get("/v1/users/user-1/notifications", headers=service.auth())
    (item,) = (await page.json())["notifications"]
    assert item["url"] == URL
    assert item["actions"] == ACTIONS_IN

    # A notification without links has neither field (frames stay as they were).
    plain = await service.send("user-1", "No link")
    assert "url" not in plain
    assert "actions" not in plain


@pytest.mark.parametrize(
    ("fields", "path", "needle"),
    [
        ({"url": f"http://{PORTAL}/x"}, "url", "https link"),
        ({"url": "https://evil.example/x"}, "url", "configured hosts"),
        ({"url": f"https://{PORTAL}@evil.example/x"}, "url", "user part"),
        ({"url": f"https://{PORTAL}.evil.example/"}, "url", "configured hosts"),
        ({"url": "javascript:alert(1)"}, "url", "https link"),
        ({"url": f"https://{PORTAL}/a b"}, "url", "https link"),
        ({"url": f"https://{PORTAL}/" + "a" * 2100}, "url", "at most 2048"),
        ({"actions": [{"label": "x", "action": "confirm"}] * 4}, "actions", "at most 3"),
        ({"actions": [{"label": "x" * 41, "action": "confirm"}]}, "actions[0].label", "at most 40"),
        ({"actions": [{"label": "  ", "action": "confirm"}]}, "actions[0].label", "non-blank"),
        ({"actions": [{"label": "Go", "action": "confirm", "url": URL}]}, "actions[0]", "either"),
        ({"actions": [{"label": "Go"}]}, "actions[0]", "either"),
        ({"actions": [{"label": "Go", "action": "Confirm!"}]}, "actions[0].action", "a-z"),
        ({"actions": [{"label": "Go", "url": "https://evil.example/"}]}, "actions[0].url", "hosts"),
        ({"actions": [{"label": "Go", "action": "ok", "icon": "x"}]}, "actions[0].icon", "not a known"),
        ({"actions": "confirm"}, "actions", "a list"),
    ],
)
async def test_links_must_be_https_to_a_configured_host_and_actions_are_bounded(
    make_service: Any, fields: dict[str, Any], path: str, needle: str
) -> None:
    service = await _linked_service(make_service)
    resp = await _post(service, {"user_id": "user-1", "title": "Hi", **fields})
    assert resp.status == 422, await resp.text()
    details = (await resp.json())["error"]["details"]
    assert needle in details[path], details
    # Typed items follow the same rules, under the item's path in a batch.
    typed = {"kind": "lab_result", "user_id": "user-1", "test_name": "CBC", "abnormal": False, **fields}
    resp = await _post(service, {"notifications": [typed]})
    assert resp.status == 422
    assert needle in (await resp.json())["error"]["details"][f"notifications[0].{path}"]
    assert (await service.app[STORE].counts()).stored == 0


async def test_without_configured_hosts_no_link_is_accepted_and_dev_allows_localhost(
    make_service: Any,
) -> None:
    service = await make_service()
    resp = await _post(service, {"user_id": "user-1", "title": "Hi", "url": URL})
    assert resp.status == 422
    assert "DIAGNOXIX_LINK_HOSTS" in (await resp.json())["error"]["details"]["url"]
    # An action that is an answer needs no host.
    resp = await _post(
        service, {"user_id": "user-1", "title": "Hi", "actions": [{"label": "OK", "action": "ok"}]}
    )
    assert resp.status == 201, await resp.text()

    dev = await make_service(dev=True)
    for url in ("http://localhost:3000/portal", "https://127.0.0.1/x"):
        resp = await _post(dev, {"user_id": "user-1", "title": "Hi", "url": url})
        assert resp.status == 201, await resp.text()


async def test_typed_scheduled_and_in_process_sends_carry_links(make_service: Any) -> None:
    clock = ManualClock()
    service = await _linked_service(make_service, clock=clock)
    ws = await _v1(service, "user-2")
    typed = {
        "kind": "appointment",
        "user_id": "user-2",
        "appointment_id": "appt-1",
        "status": "confirmed",
        "url": URL,
        "actions": ACTIONS_IN[:2],
    }
    resp = await _post(service, typed)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["notification"]["actions"] == ACTIONS_IN[:2]

    due = (clock.now() + timedelta(minutes=5)).isoformat()
    resp = await _post(service, {**typed, "deliver_at": due})
    assert resp.status == 202, await resp.text()
    clock.advance(360)
    frames = [await _notification_frame(ws), await _notification_frame(ws)]
    await ws.close()
    assert [f["url"] for f in frames] == [URL, URL]
    assert [f["actions"] for f in frames] == [ACTIONS_IN[:2]] * 2

    svc = service.app[SERVICE]
    note = await svc.send_lab_result_notification("user-2", "Lipid Panel", False, url=URL)
    assert note.to_wire()["url"] == URL
    note = await svc.create_and_send_notification("user-2", "custom", "T", "M", actions=ACTIONS_IN[:1])
    assert note.to_wire()["actions"] == ACTIONS_IN[:1]
    with pytest.raises(FieldErrors) as refused:
        await svc.send_ai_analysis_notification("user-2", "x", "y", url="https://evil.example/")
    assert "url" in refused.value.details


async def test_an_answer_is_recorded_once_and_reaches_the_listeners_with_the_sender(
    make_service: Any,
) -> None:
    service = await _linked_service(make_service)
    heard: list[AnsweredAction] = []
    service.app[ACTIONS].add_listener(heard.append)
    key_id = (await service.app[API_KEYS].authenticate(service.api_key)).id
    sent = await service.send("user-3", "Appointment", url=URL, actions=ACTIONS_IN)
    nid = sent["id"]
    token = service.token("user-3")

    resp = await _answer(service, token, nid, "confirm")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["recorded"] is True
    assert body["action"] == "confirm"
    assert body["user_id"] == "user-3"
    assert [(h.notification_id, h.user_id, h.action, h.sent_by, h.type) for h in heard] == [
        (nid, "user-3", "confirm", key_id, "notification")
    ]
    # The same answer again (a retry, a second device): recorded once, heard once.
    resp = await _answer(service, token, nid, "confirm")
    assert resp.status == 200
    assert (await resp.json())["recorded"] is False
    # Another answer is refused with the first.
    resp = await _answer(service, token, nid, "decline")
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "already_answered"
    assert error["details"]["answer"]["action"] == "confirm"
    assert len(heard) == 1

    # Only its user, only its answer actions, only with the user's own token.
    other = await service.send("user-3", "Another", actions=ACTIONS_IN)
    for token_, nid_, action, status in (
        (service.token("user-4"), other["id"], "confirm", 404),  # another user's notification
        (token, other["id"], "reschedule", 404),  # no such action (a link is not an answer)
        (token, "no-such-notification", "confirm", 404),
        (service.api_key, other["id"], "confirm", 403),  # a service cannot answer for the patient
        ("not-a-token", other["id"], "confirm", 401),
        (token, other["id"], "Confirm!", 400),
    ):
        resp = await _answer(service, token_, nid_, action)
        assert resp.status == status, (action, await resp.text())
    resp = await service.client.post(f"/v1/notifications/{other['id']}/actions/confirm")
    assert resp.status == 401
    assert len(heard) == 1

    # Audited: who answered which notification with what; never its words.
    await service.app[STORE].flush()
    entries = await service.app[STORE].audit_entries(limit=20)
    answered = [e for e in entries if e["action"] == "notification.action"]
    assert [(e["actor"], e["details"]) for e in answered] == [
        ("user:user-3", {"id": nid, "action": "confirm"})
    ]


async def test_a_failing_listener_does_not_fail_the_answer(make_service: Any) -> None:
    service = await _linked_service(make_service)

    def broken(_: AnsweredAction) -> None:
        raise RuntimeError("webhook outbox down")

    heard: list[AnsweredAction] = []
    service.app[ACTIONS].add_listener(broken)
    service.app[ACTIONS].add_listener(heard.append)
    sent = await service.send("user-5", "Appointment", actions=ACTIONS_IN[:1])
    resp = await _answer(service, service.token("user-5"), sent["id"], "confirm")
    assert resp.status == 200
    assert len(heard) == 1


async def test_the_python_clients_send_links_and_answer_actions(make_service: Any) -> None:
    service = await _linked_service(make_service)
    heard: list[AnsweredAction] = []
    service.app[ACTIONS].add_listener(heard.append)
    base = str(service.client.make_url("/")).rstrip("/")

    async def token() -> str:
        return service.token("user-6")

    async with NotifyClient(base, service.api_key) as notify, Subscriber(base, token, since=0) as sub:
        await notify.send("user-6", "Appointment", url=URL, actions=ACTIONS_IN)
        (typed,) = await notify.send_batch([lab_result_item("user-6", "CBC", False, url=URL)])
        assert typed["url"] == URL
        first = await sub.next(wait_seconds=5)
        second = await sub.next(wait_seconds=5)
        assert first["url"] == URL
        assert first["actions"] == ACTIONS_IN
        assert second["url"] == URL
        assert "actions" not in second
        answered = await sub.answer(first["id"], "decline")
        assert answered["recorded"] is True
        assert answered["action"] == "decline"
        with pytest.raises(NotifyError) as refused:
            await sub.answer(first["id"], "confirm")
        assert refused.value.status == 409
        with pytest.raises(NotifyError) as bad:
            await notify.send("user-6", "Bad", url="http://portal.example.org/")
        assert bad.value.status == 422
        assert "url" in (bad.value.details or {})
    assert [h.action for h in heard] == ["decline"]
