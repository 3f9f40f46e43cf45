"""The in-process Python service API: the seed's typed senders, stored then delivered."""

from __future__ import annotations

import dataclasses
import json

import pytest

from diagnoxix.delivery.service import NotificationService
from diagnoxix.keys import SERVICE, STORE
from diagnoxix.models import NotificationDraft
from diagnoxix.rules import FieldErrors

from .conftest import Service


def _svc(service: Service) -> NotificationService:
    return service.app[SERVICE]  # type: ignore[no-any-return]


async def test_appointment_confirmed_reaches_the_patient(service: Service) -> None:
    ws = await service.connect("patient-1")
    note = await _svc(service).send_appointment_notification(
        "patient-1",
        "appointment-456",
        "confirmed",
        "Your appointment has been confirmed for tomorrow at 2:00 PM",
    )
    frame = await ws.receive_json(timeout=2)
    assert frame["id"] == note.id
    assert frame["type"] == "appointment_confirmed"
    assert frame["title"] == "Appointment Confirmed"
    assert frame["message"] == "Your appointment has been confirmed for tomorrow at 2:00 PM"
    assert frame["data"] == {
        "appointment_id": "appointment-456",
        "type": "appointment",
        "status": "confirmed",
    }
    await ws.close()


@pytest.mark.parametrize("status", ["created", "confirmed", "cancelled", "rescheduled", "reminder"])
async def test_every_appointment_status_has_default_wording(service: Service, status: str) -> None:
    note = await _svc(service).send_appointment_notification("p1", "a1", status)  # type: ignore[arg-type]
    assert note.type == f"appointment_{status}"
    assert note.title
    assert note.message
    assert note.priority == ("high" if status == "cancelled" else "normal")


async def test_unknown_appointment_status_is_refused(service: Service) -> None:
    with pytest.raises(FieldErrors) as refused:
        await _svc(service).send_appointment_notification("p1", "a1", "teleported")  # type: ignore[arg-type]
    assert "status" in refused.value.details
    assert (await service.app[STORE].counts()).stored == 0


async def test_lab_result_says_ready_and_carries_no_values(service: Service) -> None:
    normal = await _svc(service).send_lab_result_notification("p1", "Complete Blood Count", False)
    abnormal = await _svc(service).send_lab_result_notification("p1", "Lipid Panel", True)
    assert normal.type == abnormal.type == "lab_result_ready"
    assert "ready" in normal.message
    assert "ready" in abnormal.message
    assert (normal.priority, abnormal.priority) == ("normal", "high")
    # The abnormal flag itself is never in the payload; only the priority reflects it.
    for note in (normal, abnormal):
        assert "abnormal" not in json.dumps(note.data)
        assert set(note.data) == {"type", "test_name"}


async def test_ai_analysis_notification(service: Service) -> None:
    note = await _svc(service).send_ai_analysis_notification("p1", "symptom_analysis", "analysis-9")
    assert note.type == "ai_analysis_complete"
    assert note.data == {
        "type": "ai_analysis",
        "analysis_type": "symptom_analysis",
        "analysis_id": "analysis-9",
    }
    assert "symptom analysis" in note.message


async def test_custom_notification_validates_like_the_api(service: Service) -> None:
    note = await _svc(service).create_and_send_notification(
        "p1", "CUSTOM_TYPE", "Custom Title", "Custom message", {"custom_data": "value"}
    )
    assert (await service.app[STORE].get_notifications([note.id])) == [note]
    with pytest.raises(FieldErrors) as refused:
        await _svc(service).create_and_send_notification("p 1", "ping", "", "m", {"x": "y" * 20_000})
    assert set(refused.value.details) == {"user_id", "type", "title", "data"}


async def test_broadcast_reaches_everyone_connected(service: Service) -> None:
    sockets = [await service.connect(f"user-{i}") for i in range(3)]
    note = await _svc(service).broadcast_system_notification("Scheduled maintenance", "Tonight at 22:00")
    for ws in sockets:
        frame = await ws.receive_json(timeout=2)
        assert frame["id"] == note.id
        assert frame["type"] == "system"
        await ws.close()


@pytest.mark.parametrize(
    ("title", "message", "data"),
    [
        ("Plain", "ascii only", {}),
        ('Quotes " and \\ backslash', "line\nbreak\ttab", {"nested": {"list": [1, 2.5, None, True]}}),
        ("Ünïcödé ✓ 😀", "\u2028 line separator \x01 control", {"é": "ü", "emoji": "🩺"}),
    ],
)
async def test_frames_are_exactly_the_json_of_the_wire_form(
    service: Service, title: str, message: str, data: dict[str, object]
) -> None:
    # Frames are assembled from pre-encoded parts for speed; they must stay byte-identical to the
    # plain encoding a client library would produce and parse.
    ws = await service.connect("frames-user")
    note = await _svc(service).create_and_send_notification("frames-user", "custom", title, message, data)
    raw = (await ws.receive(timeout=2)).data
    assert raw == json.dumps(note.to_wire(), ensure_ascii=False, separators=(",", ":"))
    assert json.loads(raw)["data"] == data
    await ws.close()


@pytest.mark.parametrize(
    ("title", "message", "data"),
    [
        ("Plain", "ascii only", {}),
        ("Ünïcödé ✓ 😀", 'Quotes " \\ \u2028 \x01', {"é": "ü", "nested": {"list": [1, 2.5, None, True]}}),
    ],
)
async def test_api_answers_are_exactly_the_json_of_the_api_form(
    service: Service, title: str, message: str, data: dict[str, object]
) -> None:
    # The HTTP API assembles each notification of its answer from the encoded frame; the result
    # must be the same JSON as encoding `to_api()` plus the delivery state, whatever the state.
    notes = await _svc(service).send(
        [NotificationDraft(user_id="api-user", type="custom", title=title, message=message, data=data)]
    )
    for note in notes:
        for delivered, read in ((None, None), (note.created_at, None), (note.created_at, note.created_at)):
            copy = dataclasses.replace(note, delivered_at=delivered, read_at=read, frame=None)
            expected = {**copy.to_api(), "delivery": "queued"}
            compact = json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
            assert copy.encode_api("queued") == compact
    forever = dataclasses.replace(notes[0], expires_at=None, expires_text=None, frame=None)
    assert json.loads(forever.encode_api("sending"))["expires_at"] is None
