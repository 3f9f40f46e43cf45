"""Typed sends over HTTP and in the Python client: a backend names a kind and its facts, and the
patient gets exactly the words, data and priority the in-process typed senders produce.

Every send goes through a real server on loopback and reaches a real v1 WebSocket client; the
expected notification is what `NotificationService`'s own typed sender stores for the same input.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from diagnoxix.api.openapi import openapi_document
from diagnoxix.config import Settings
from diagnoxix.delivery.service import NotificationService
from diagnoxix.keys import SERVICE, STORE
from diagnoxix.models import Notification
from diagnoxix.rules import FieldErrors
from diagnoxix.rules.kinds import APPOINTMENT_STATUSES, KIND_NAMES, KINDS
from diagnoxix_client import (
    NotifyClient,
    NotifyError,
    ai_analysis_item,
    appointment_item,
    lab_result_item,
)

from .conftest import Service

README = Path(__file__).resolve().parent.parent / "README.md"
# What a typed send decides, and so what must match the in-process sender's notification.
WORDED = ("type", "title", "message", "data", "priority")


def _svc(service: Service) -> NotificationService:
    return service.app[SERVICE]  # type: ignore[no-any-return]


def _worded(note: Notification | dict[str, Any]) -> dict[str, Any]:
    fields = note.to_api() if isinstance(note, Notification) else note
    return {k: fields[k] for k in WORDED}


async def _v1_client(service: Service, user_id: str) -> Any:
    """A v1 WebSocket client of `user_id`, past its welcome."""
    ws = await service.connect(user_id, v1=True, since=0)
    async with asyncio.timeout(3):
        while json.loads((await ws.receive()).data)["type"] != "welcome":
            pass
    return ws


async def _frames(ws: Any, count: int) -> list[dict[str, Any]]:
    """The next `count` notification frames (control frames such as `unread` skipped)."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(3):
        while len(frames) < count:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            if "seq" in frame and "id" in frame:
                frames.append(frame)
    return frames


async def _post(service: Service, body: Any, key: str | None = None) -> aiohttp.ClientResponse:
    headers = service.auth() | ({"Idempotency-Key": key} if key else {})
    return await service.client.post("/v1/notifications", json=body, headers=headers)


async def _stored(service: Service) -> int:
    return int((await service.app[STORE].counts()).stored)


# Each kind's facts: (the HTTP item's fields besides kind and user_id, the in-process call).
CASES: dict[str, tuple[str, dict[str, Any], tuple[Any, ...], dict[str, Any]]] = {
    "appointment confirmed, own message": (
        "appointment",
        {"appointment_id": "appointment-456", "status": "confirmed", "message": "See you at 2:00 PM"},
        ("appointment-456", "confirmed", "See you at 2:00 PM"),
        {},
    ),
    **{
        f"appointment {status}, our message": (
            "appointment",
            {"appointment_id": "appt-88", "status": status},
            ("appt-88", status),
            {},
        )
        for status in APPOINTMENT_STATUSES
    },
    "appointment, null message is ours": (
        "appointment",
        {"appointment_id": "appt-88", "status": "reminder", "message": None},
        ("appt-88", "reminder", ""),
        {},
    ),
    "lab result, normal": (
        "lab_result",
        {"test_name": "Complete Blood Count", "abnormal": False},
        ("Complete Blood Count", False),
        {},
    ),
    "lab result, abnormal": (
        "lab_result",
        {"test_name": "Lipid Panel", "abnormal": True},
        ("Lipid Panel", True),
        {},
    ),
    "ai analysis": (
        "ai_analysis",
        {"analysis_type": "symptom_analysis", "analysis_id": "analysis-9"},
        ("symptom_analysis", "analysis-9"),
        {},
    ),
    "ai analysis, high priority": (
        "ai_analysis",
        {"analysis_type": "skin_lesion_review", "analysis_id": "an-5531", "priority": "high"},
        ("skin_lesion_review", "an-5531"),
        {"priority": "high"},
    ),
}


async def _in_process(service: Service, kind: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Notification:
    svc = _svc(service)
    if kind == "appointment":
        return await svc.send_appointment_notification("reference-user", *args, **kw)
    if kind == "lab_result":
        return await svc.send_lab_result_notification("reference-user", *args, **kw)
    return await svc.send_ai_analysis_notification("reference-user", *args, **kw)


@pytest.mark.parametrize("case", list(CASES))
async def test_each_kind_over_http_is_what_the_in_process_sender_sends(service: Service, case: str) -> None:
    kind, fields, args, kw = CASES[case]
    expected = _worded(await _in_process(service, kind, args, kw))
    ws = await _v1_client(service, "patient-1")
    resp = await _post(service, {"kind": kind, "user_id": "patient-1", **fields})
    assert resp.status == 201, await resp.text()
    answered = (await resp.json())["notification"]
    (frame,) = await _frames(ws, 1)
    assert frame["id"] == answered["id"]
    assert frame["user_id"] == "patient-1"
    assert _worded(frame) == _worded(answered) == expected
    await ws.close()


async def test_the_wording_is_the_seeds(service: Service) -> None:
    # The in-process senders' words, pinned: both paths read them from one place.
    resp = await _post(
        service,
        {
            "notifications": [
                {
                    "kind": "lab_result",
                    "user_id": "p1",
                    "test_name": "Complete Blood Count",
                    "abnormal": False,
                },
                {"kind": "lab_result", "user_id": "p1", "test_name": "Lipid Panel", "abnormal": True},
                {"kind": "appointment", "user_id": "p1", "appointment_id": "a1", "status": "cancelled"},
                {
                    "kind": "ai_analysis",
                    "user_id": "p1",
                    "analysis_type": "symptom_analysis",
                    "analysis_id": "x",
                },
            ]
        },
    )
    assert resp.status == 201, await resp.text()
    normal, abnormal, cancelled, analysis = (await resp.json())["notifications"]
    assert _worded(normal) == {
        "type": "lab_result_ready",
        "title": "Lab Result Ready",
        "message": "Your Complete Blood Count result is ready to view.",
        "data": {"type": "lab_result", "test_name": "Complete Blood Count"},
        "priority": "normal",
    }
    assert abnormal["message"] == "Your Lipid Panel result is ready. Please review it with your care team."
    assert abnormal["priority"] == "high"
    assert "abnormal" not in json.dumps(abnormal["data"])  # the flag is never in the payload
    assert _worded(cancelled) == {
        "type": "appointment_cancelled",
        "title": "Appointment Cancelled",
        "message": "Your appointment has been cancelled.",
        "data": {"appointment_id": "a1", "type": "appointment", "status": "cancelled"},
        "priority": "high",
    }
    assert (analysis["title"], analysis["message"]) == (
        "Analysis Ready",
        "Your symptom analysis is ready to view.",
    )


async def test_a_batch_mixes_typed_and_free_form_items_with_the_same_idempotency(service: Service) -> None:
    batch = {
        "notifications": [
            {"kind": "appointment", "user_id": "mia", "appointment_id": "appt-1", "status": "reminder"},
            {"user_id": "mia", "title": "Prescription Ready", "message": "Pick it up at the front desk."},
            {"kind": "lab_result", "user_id": "mia", "test_name": "HbA1c", "abnormal": True},
            {"user_id": "mia", "title": "Survey", "type": "survey", "data": {"survey_id": "s-1"}},
            {
                "kind": "ai_analysis",
                "user_id": "mia",
                "analysis_type": "symptom_analysis",
                "analysis_id": "an-1",
            },
        ]
    }
    ws = await _v1_client(service, "mia")
    resp = await _post(service, batch, key="mia-batch-1")
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["count"] == 5
    notes = body["notifications"]
    assert [n["type"] for n in notes] == [
        "appointment_reminder",
        "notification",
        "lab_result_ready",
        "survey",
        "ai_analysis_complete",
    ]
    assert notes[1]["title"] == "Prescription Ready"
    assert notes[2]["priority"] == "high"
    frames = await _frames(ws, 5)
    assert [f["id"] for f in frames] == [n["id"] for n in notes]
    assert [_worded(f) for f in frames] == [_worded(n) for n in notes]
    # A retry with the same key and body stores nothing twice and answers what was stored.
    again = await _post(service, batch, key="mia-batch-1")
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [n["id"] for n in (await again.json())["notifications"]] == [n["id"] for n in notes]
    changed = {"notifications": [*batch["notifications"][:2], lab_result_item("mia", "HbA1c", False)]}
    reused = await _post(service, changed, key="mia-batch-1")
    assert reused.status == 422
    assert (await reused.json())["error"]["code"] == "idempotency_key_reused"
    assert await _stored(service) == 5
    await ws.close()


LAB = {"kind": "lab_result", "user_id": "p1", "test_name": "Complete Blood Count", "abnormal": False}
APPOINTMENT = {"kind": "appointment", "user_id": "p1", "appointment_id": "appt-1", "status": "confirmed"}
ANALYSIS = {
    "kind": "ai_analysis",
    "user_id": "p1",
    "analysis_type": "symptom_analysis",
    "analysis_id": "an-1",
}
BAD_ITEMS: dict[str, tuple[dict[str, Any], set[str]]] = {
    # Free-form fields on a typed item: the server words it, and a lab result never carries values.
    "lab result with a title": ({**LAB, "title": "Glucose 180 mg/dL"}, {"title"}),
    "lab result with a message": ({**LAB, "message": "Your glucose is 180 mg/dL"}, {"message"}),
    "lab result with data": ({**LAB, "data": {"value": 180}}, {"data"}),
    "lab result with a type": ({**LAB, "type": "custom"}, {"type"}),
    "lab result with a priority": ({**LAB, "priority": "low"}, {"priority"}),
    "lab result with a null priority": ({**LAB, "priority": None}, {"priority"}),
    "lab result with a value field": ({**LAB, "value": "180 mg/dL"}, {"value"}),
    "appointment with a title": ({**APPOINTMENT, "title": "Hi"}, {"title"}),
    "appointment with data": ({**APPOINTMENT, "data": {}}, {"data"}),
    "appointment with a priority": ({**APPOINTMENT, "priority": "low"}, {"priority"}),
    "ai analysis with a message": ({**ANALYSIS, "message": "m"}, {"message"}),
    "ai analysis with a title": ({**ANALYSIS, "title": "t"}, {"title"}),
    # Each kind's own fields.
    "abnormal as a string": ({**LAB, "abnormal": "false"}, {"abnormal"}),
    "abnormal as a number": ({**LAB, "abnormal": 0}, {"abnormal"}),
    "abnormal missing": ({k: v for k, v in LAB.items() if k != "abnormal"}, {"abnormal"}),
    "test name missing": ({k: v for k, v in LAB.items() if k != "test_name"}, {"test_name"}),
    "test name blank": ({**LAB, "test_name": "   "}, {"test_name"}),
    "test name too long": ({**LAB, "test_name": "x" * 129}, {"test_name"}),
    "test name with NUL": ({**LAB, "test_name": "CBC\x00"}, {"test_name"}),
    "test name not a string": ({**LAB, "test_name": ["CBC"]}, {"test_name"}),
    "unknown status": ({**APPOINTMENT, "status": "teleported"}, {"status"}),
    "status missing": ({k: v for k, v in APPOINTMENT.items() if k != "status"}, {"status"}),
    "appointment id missing": (
        {k: v for k, v in APPOINTMENT.items() if k != "appointment_id"},
        {"appointment_id"},
    ),
    "appointment message too long": ({**APPOINTMENT, "message": "m" * 4001}, {"message"}),
    "appointment message not text": ({**APPOINTMENT, "message": 5}, {"message"}),
    "analysis priority unknown": ({**ANALYSIS, "priority": "urgent"}, {"priority"}),
    "analysis id empty": ({**ANALYSIS, "analysis_id": ""}, {"analysis_id"}),
    "bad user id": ({**LAB, "user_id": "*"}, {"user_id"}),
    "user id missing": ({k: v for k, v in LAB.items() if k != "user_id"}, {"user_id"}),
    "every problem at once": (
        {"kind": "appointment", "user_id": "", "status": "gone", "title": "t"},
        {"user_id", "appointment_id", "status", "title"},
    ),
    # The kind itself.
    "unknown kind": ({**LAB, "kind": "prescription"}, {"kind"}),
    "kind in another case": ({**LAB, "kind": "Lab_Result"}, {"kind"}),
    "null kind": ({**LAB, "kind": None}, {"kind"}),
    "kind not a string": ({**LAB, "kind": ["lab_result"]}, {"kind"}),
}


@pytest.mark.parametrize("case", list(BAD_ITEMS))
async def test_every_bad_typed_item_is_a_422_naming_the_field(service: Service, case: str) -> None:
    item, fields = BAD_ITEMS[case]
    alone = await _post(service, item)
    assert alone.status == 422, await alone.text()
    error = (await alone.json())["error"]
    assert error["code"] == "validation_failed"
    assert set(error["details"]) == fields
    # In a batch, behind a valid item: the path names the item, and nothing of the batch is stored.
    batch = await _post(service, {"notifications": [LAB, item]})
    assert batch.status == 422
    assert set((await batch.json())["error"]["details"]) == {f"notifications[1].{f}" for f in fields}
    assert await _stored(service) == 0


async def test_an_unknown_kind_lists_the_kinds_and_a_lab_result_says_why(service: Service) -> None:
    unknown = await (await _post(service, {**LAB, "kind": "prescription"})).json()
    problem = unknown["error"]["details"]["kind"]
    assert all(name in problem for name in ("appointment", "lab_result", "ai_analysis"))
    assert KIND_NAMES == ("appointment", "lab_result", "ai_analysis")
    titled = await (await _post(service, {**LAB, "title": "t"})).json()
    assert "never values" in titled["error"]["details"]["title"]


async def test_the_in_process_senders_keep_the_same_rules(service: Service) -> None:
    svc = _svc(service)
    with pytest.raises(FieldErrors) as refused:
        await svc.send_lab_result_notification("p1", "CBC\x00", "false")  # type: ignore[arg-type]
    assert set(refused.value.details) == {"test_name", "abnormal"}
    with pytest.raises(FieldErrors) as refused:
        await svc.send_appointment_notification("p 1", "", "gone")  # type: ignore[arg-type]
    assert set(refused.value.details) == {"user_id", "appointment_id", "status"}
    with pytest.raises(FieldErrors) as refused:
        await svc.send_ai_analysis_notification("p1", "t", "a", priority="urgent")  # type: ignore[arg-type]
    assert set(refused.value.details) == {"priority"}
    assert await _stored(service) == 0


async def test_the_python_client_sends_each_kind(service: Service) -> None:
    svc = _svc(service)
    expected = [
        _worded(await svc.send_appointment_notification("ref", "appt-7", "rescheduled", "Now Friday 9:00")),
        _worded(await svc.send_lab_result_notification("ref", "Lipid Panel", True)),
        _worded(
            await svc.send_ai_analysis_notification("ref", "symptom_analysis", "an-7", priority="critical")
        ),
        _worded(await svc.send_appointment_notification("ref", "appt-8", "cancelled")),
        _worded(await svc.send_lab_result_notification("ref", "HbA1c", False)),
        _worded(await svc.send_ai_analysis_notification("ref", "symptom_analysis", "an-8")),
    ]
    ws = await _v1_client(service, "zoe")
    async with NotifyClient(str(service.client.make_url("/")), service.api_key) as notify:
        sent = [
            await notify.send_appointment("zoe", "appt-7", "rescheduled", "Now Friday 9:00"),
            await notify.send_lab_result("zoe", "Lipid Panel", abnormal=True, idempotency_key="zoe-lab-1"),
            await notify.send_ai_analysis("zoe", "symptom_analysis", "an-7", priority="critical"),
        ]
        sent += await notify.send_batch(
            [
                appointment_item("zoe", "appt-8", "cancelled"),
                lab_result_item("zoe", "HbA1c", abnormal=False),
                ai_analysis_item("zoe", "symptom_analysis", "an-8"),
            ]
        )
        retried = await notify.send_lab_result("zoe", "Lipid Panel", True, idempotency_key="zoe-lab-1")
        with pytest.raises(NotifyError) as refused:
            await notify.send_appointment("zoe", "appt-9", "teleported")  # type: ignore[arg-type]
    assert [_worded(n) for n in sent] == expected
    assert retried["id"] == sent[1]["id"]
    assert (refused.value.status, refused.value.code) == (422, "validation_failed")
    assert set(refused.value.details) == {"status"}
    frames = await _frames(ws, 6)
    assert [f["id"] for f in frames] == [n["id"] for n in sent]
    assert [_worded(f) for f in frames] == expected
    await ws.close()


def _readme_examples(marker: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"<!-- example: {re.escape(marker)} -->\n```json\n(.*?)```", text, re.S)


async def test_the_readmes_typed_examples_are_what_the_server_does(service: Service) -> None:
    (batch,) = [b for b in _readme_examples("POST /v1/notifications request") if '"kind"' in b]
    resp = await _post(service, json.loads(batch))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["count"] == len(json.loads(batch)["notifications"])
    (answer,) = [a for a in _readme_examples("POST /v1/notifications 201 response") if "lab_result" in a]
    shown = json.loads(answer)["notification"]
    curl = re.search(r"-d '(\{\"kind\": \"lab_result\".*?)'", README.read_text(encoding="utf-8"))
    assert curl is not None
    resp = await _post(service, json.loads(curl[1]))
    assert resp.status == 201
    assert _worded((await resp.json())["notification"]) == _worded(shown)


def test_the_document_describes_both_item_shapes_from_the_rules() -> None:
    doc = openapi_document(Settings())
    schemas = doc["components"]["schemas"]
    typed = schemas["TypedNotificationInput"]
    assert typed["discriminator"]["propertyName"] == "kind"
    assert set(typed["discriminator"]["mapping"]) == set(KINDS)
    for name, kind in KINDS.items():
        schema = schemas[typed["discriminator"]["mapping"][name].rsplit("/", 1)[1]]
        assert set(schema["properties"]) == kind.field_names | {"url", "actions"}
        assert set(schema["required"]) == {"kind", "user_id", *(f.name for f in kind.fields if f.required)}
    body = doc["paths"]["/v1/notifications"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**body, "components": doc["components"]})
    item = {**LAB, "user_id": "p1"}
    assert validator.is_valid(item)
    assert validator.is_valid({"notifications": [item, {"user_id": "p1", "title": "t"}]})
    for bad, _ in BAD_ITEMS.values():
        assert not validator.is_valid(bad), bad
        assert not validator.is_valid({"notifications": [item, bad]}), bad
