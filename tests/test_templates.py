"""Templates and locales: typed notifications worded from sandboxed Jinja templates in each user's
language, through the HTTP API, real v1 clients, the Python clients and the dashboard.

A user's locale is set over the API (a service's key or the user's own token); a send may name
one; otherwise the server's default. Built in: English, German and Spanish. Staff add or replace a
template per type and locale in the dashboard (CSRF-checked, audited), checked in the sandbox
first; one that fails when rendered falls back to the built-in English text, logged without a
fact of the notification.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.keys import CLOCK, SERVICE, STORE, TEMPLATES
from diagnoxix.rules.templates import Sandbox, check_template
from diagnoxix_client import NotifyClient, Subscriber, appointment_item, lab_result_item

from .conftest import Service
from .dashboard_support import StaffClient, start_server

LAB = {"kind": "lab_result", "test_name": "Lipid Panel", "abnormal": False}
LAB_DE = ("Laborergebnis liegt vor", "Ihr Ergebnis (Lipid Panel) liegt vor. Sie können es jetzt ansehen.")
LAB_EN = ("Lab Result Ready", "Your Lipid Panel result is ready to view.")


async def _send(service: Service, item: dict[str, Any]) -> dict[str, Any]:
    resp = await service.client.post("/v1/notifications", json=item, headers=service.auth())
    assert resp.status in (201, 202), await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _words(service: Service, item: dict[str, Any]) -> tuple[str, str]:
    note = (await _send(service, item))["notification"]
    return note["title"], note["message"]


async def _put_locale(service: Service, user_id: str, locale: Any, token: str | None = None) -> Any:
    auth = {"Authorization": f"Bearer {token}"} if token else service.auth()
    return await service.client.put(f"/v1/users/{user_id}/locale", json={"locale": locale}, headers=auth)


async def test_a_users_locale_is_set_over_the_api_by_a_service_or_the_user(service: Service) -> None:
    resp = await service.client.get("/v1/users/user-1/locale", headers=service.auth())
    assert await resp.json() == {"user_id": "user-1", "locale": None, "default_locale": "en"}
    resp = await _put_locale(service, "user-1", "de")
    assert (await resp.json())["locale"] == "de"
    # The user's own token: for themselves only.
    resp = await _put_locale(service, "user-1", "es-419", token=service.token("user-1"))
    assert resp.status == 200
    resp = await _put_locale(service, "user-1", "en", token=service.token("user-2"))
    assert resp.status == 403
    resp = await service.client.get(
        "/v1/users/user-1/locale", headers={"Authorization": f"Bearer {service.token('user-1')}"}
    )
    assert (await resp.json())["locale"] == "es-419"
    for bad in ("German", "de_DE", "", 7, "d" * 40):
        resp = await _put_locale(service, "user-1", bad)
        assert resp.status == 422, bad
        assert "locale" in (await resp.json())["error"]["details"]
    resp = await service.client.put("/v1/users/user-1/locale", json={}, headers=service.auth())
    assert resp.status == 422
    # null: back to the server's default.
    resp = await _put_locale(service, "user-1", None)
    assert (await resp.json())["locale"] is None
    await service.app[STORE].flush()
    entries = await service.app[STORE].audit_entries(limit=50)
    assert [e["details"]["locale"] for e in entries if e["action"] == "user.locale"][::-1] == [
        "de",
        "es-419",
        None,
    ]


async def test_typed_sends_are_worded_in_the_users_locale_and_reach_a_v1_client(service: Service) -> None:
    await _put_locale(service, "user-de", "de-AT")  # finds the German templates
    ws = await service.connect("user-de", v1=True, since=0)
    note = (await _send(service, {**LAB, "user_id": "user-de"}))["notification"]
    assert (note["title"], note["message"]) == LAB_DE
    async with asyncio.timeout(3):
        while (frame := await ws.receive_json())["type"] != "lab_result_ready":
            pass
    assert (frame["title"], frame["message"]) == LAB_DE
    await ws.close()
    # The data and priority are the kind's, whatever the language; the flag is still not in it.
    assert note["data"] == {"type": "lab_result", "test_name": "Lipid Panel"}

    # A send that names a locale wins over the user's; one without a template falls back.
    assert await _words(service, {**LAB, "user_id": "user-de", "locale": "es"}) == (
        "Resultado de laboratorio disponible",
        "Su resultado de Lipid Panel está listo.",
    )
    assert await _words(service, {**LAB, "user_id": "user-de", "locale": "fr"}) == LAB_EN
    assert await _words(service, {**LAB, "user_id": "nobody-set-one"}) == LAB_EN
    appointment = {
        "kind": "appointment",
        "user_id": "user-de",
        "appointment_id": "a-1",
        "status": "cancelled",
    }
    assert await _words(service, appointment) == ("Termin abgesagt", "Ihr Termin wurde abgesagt.")
    # The sender's own message is kept; only the title is the template's.
    assert await _words(service, {**appointment, "message": "Bitte rufen Sie uns an."}) == (
        "Termin abgesagt",
        "Bitte rufen Sie uns an.",
    )
    # A batch: each recipient in their own language, one read of the locales.
    resp = await service.client.post(
        "/v1/notifications",
        json={"notifications": [{**LAB, "user_id": "user-de"}, {**LAB, "user_id": "user-en"}]},
        headers=service.auth(),
    )
    notes = (await resp.json())["notifications"]
    assert [(n["title"], n["message"]) for n in notes] == [LAB_DE, LAB_EN]
    # A notification in the sender's own words is never touched.
    own = await service.send("user-de", "Prescription Ready", message="Pick it up.")
    assert (own["title"], own["message"]) == ("Prescription Ready", "Pick it up.")
    resp = await service.client.post(
        "/v1/notifications", json={**LAB, "user_id": "user-de", "locale": "Deutsch"}, headers=service.auth()
    )
    assert resp.status == 422
    assert "locale" in (await resp.json())["error"]["details"]


async def test_the_default_locale_is_a_setting_and_in_process_senders_follow_it(make_service: Any) -> None:
    service = await make_service(default_locale="es")
    assert await _words(service, {**LAB, "user_id": "u1"}) == (
        "Resultado de laboratorio disponible",
        "Su resultado de Lipid Panel está listo.",
    )
    svc = service.app[SERVICE]
    note = await svc.send_ai_analysis_notification("u1", "symptom_analysis", "an-1", locale="de")
    assert (note.title, note.message) == ("Analyse liegt vor", "Ihre Analyse (symptom analysis) liegt vor.")
    note = await svc.send_appointment_notification("u1", "a-1", "reminder", locale="en")
    assert (note.title, note.message) == ("Appointment Reminder", "You have an upcoming appointment.")


async def test_a_scheduled_typed_send_is_worded_when_scheduled(make_service: Any) -> None:
    clock = ManualClock()
    service = await make_service(clock=clock)
    await _put_locale(service, "user-s", "de")
    due = (clock.now() + timedelta(seconds=30)).isoformat()
    body = await _send(service, {**LAB, "user_id": "user-s", "deliver_at": due})
    assert body["scheduled"]["state"] == "pending"
    await _put_locale(service, "user-s", "en")  # too late: it was worded when scheduled
    clock.advance(60)
    async with asyncio.timeout(5):
        while not (page := await service.app[STORE].history("user-s", before_seq=None, limit=5)):
            await asyncio.sleep(0.02)
    assert (page[0].title, page[0].message) == LAB_DE


async def test_a_template_that_fails_falls_back_to_english_and_logs_no_patient_data(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    book = service.app[TEMPLATES]
    # Compiles and renders every example, but renders too long for this test name.
    long_title = "{{ test_name }}" + "{{ test_name|upper }}" * 8
    assert book.check("lab_result_ready", long_title, "ok") == {}
    await book.save("lab_result_ready", "de", long_title, "x", "alice", service.app[CLOCK].now())
    await _put_locale(service, "user-f", "de")
    item = {
        "kind": "lab_result",
        "user_id": "user-f",
        "test_name": "Hemoglobin A1c and lipid panel, fasting",
        "abnormal": True,
    }
    with caplog.at_level(logging.INFO):
        title, message = await _words(service, item)
    assert (title, message) == (
        "Lab Result Ready",
        "Your Hemoglobin A1c and lipid panel, fasting result is ready. Please review it with your care team.",
    )
    failures = [r for r in caplog.records if r.getMessage() == "template.failed"]
    assert len(failures) == 1
    assert (failures[0].type, failures[0].locale) == ("lab_result_ready", "de")  # type: ignore[attr-defined]
    assert "Hemoglobin" not in caplog.text
    assert "user-f" not in " ".join(r.getMessage() + str(r.__dict__) for r in failures)


@pytest.mark.parametrize(
    ("title", "message", "field", "says"),
    [
        ("{% for i in range(9) %}x{% endfor %}", "m", "title", "For"),
        ("{{ test_name.__class__ }}", "m", "title", "Getattr"),
        ("{{ test_name * 1000 }}", "m", "title", "Mul"),
        ("{{ test_name|center(100000) }}", "m", "title", "center"),
        ("{{ lipid_value }}", "m", "title", "lipid_value"),
        ("{{ cycler }}", "m", "title", "cycler"),
        ("t", "{% include 'base.html' %}", "message", "Include"),
        ("t", "{% set x = 1 %}", "message", "Assign"),
        ("t", "{{ test_name }", "message", "not a valid template"),
        ("{{ '' }}", "m", "title", "blank"),
        ("t" * 401, "m", "title", "at most 400"),
        ("t", "{{ test_name|default(x=1) }}", "message", "default"),
    ],
)
def test_the_sandbox_refuses_what_templates_do_not_offer(
    title: str, message: str, field: str, says: str
) -> None:
    problems = check_template(Sandbox(), "lab_result_ready", title, message)
    assert says in problems[field], problems


def test_every_built_in_template_renders_every_example() -> None:
    from diagnoxix.rules.templates import BUILT_IN

    for (type_, _locale), (title, message) in BUILT_IN.items():
        assert check_template(Sandbox(), type_, title, message) == {}, type_


async def test_staff_add_a_template_in_the_dashboard_checked_audited_and_used(tmp_path: Path) -> None:
    server = await start_server(tmp_path)
    staff = StaffClient(server)
    try:
        await staff.login()
        page = await staff.get("/dashboard/templates")
        assert page.status == 200
        text = await page.text()
        assert 'data-template="lab_result_ready/de"' in text
        assert "built in" in text
        form = await staff.csrf("/dashboard/templates")
        good = {
            "csrf_token": form,
            "type": "lab_result_ready",
            "locale": "fr",
            "title": "Résultat disponible",
            "message": (
                "Votre résultat {{ test_name }} est disponible."
                "{% if abnormal %} Parlez-en à votre équipe.{% endif %}"
            ),
        }
        # CSRF like every form: a forged token or another origin changes nothing.
        assert (await staff.post("/dashboard/templates", {**good, "csrf_token": "0" * 64})).status == 403
        assert (await staff.post("/dashboard/templates", good, origin="https://evil.example")).status == 403
        bad = await staff.post("/dashboard/templates", {**good, "message": "{{ test_name.__class__ }}"})
        assert bad.status == 422
        assert "Getattr" in await bad.text()
        assert server.app[TEMPLATES].source("lab_result_ready", "fr") is None
        resp = await staff.post("/dashboard/templates", good)
        assert resp.status == 303
        assert resp.headers["Location"] == "/dashboard/templates?saved=lab_result_ready/fr"

        # Used at once, for a French-speaking patient, through the API and a real client.
        key = await server.api_key()
        async with NotifyClient(server.url, key) as notify:
            await notify.set_locale("patient-fr", "fr-CA")

            async def token() -> str:
                return server.token("patient-fr")

            async with Subscriber(server.url, token, since=0) as sub:
                await notify.send_batch([lab_result_item("patient-fr", "Lipid Panel", True)])
                note = await sub.next(wait_seconds=5)
        assert (note["title"], note["message"]) == (
            "Résultat disponible",
            "Votre résultat Lipid Panel est disponible. Parlez-en à votre équipe.",
        )
        # Audited by type and locale; never the words.
        await server.app[STORE].flush()
        entries = await server.app[STORE].audit_entries(limit=20)
        saved = [e for e in entries if e["action"] == "template.save"]
        assert [(e["actor"], e["details"]) for e in saved] == [
            ("staff:alice", {"type": "lab_result_ready", "locale": "fr"})
        ]
        # Kept across a restart; removing it brings back the default's wording.
        form = await staff.csrf("/dashboard/templates")
        resp = await staff.post(
            "/dashboard/templates/remove", {"csrf_token": form, "type": "lab_result_ready", "locale": "fr"}
        )
        assert resp.status == 303
        assert server.app[TEMPLATES].source("lab_result_ready", "fr") is None
    finally:
        await staff.close()
        await server.close()


async def test_staff_templates_survive_a_restart(tmp_path: Path) -> None:
    server = await start_server(tmp_path)
    await server.app[TEMPLATES].save(
        "appointment_confirmed", "de", "Bestätigt!", "Bis bald.", "alice", server.app[CLOCK].now()
    )
    await server.close()
    server = await start_server(tmp_path, with_admin=False)
    try:
        svc = server.app[SERVICE]
        note = await svc.send_appointment_notification("p1", "a-1", "confirmed", locale="de")
        assert (note.title, note.message) == ("Bestätigt!", "Bis bald.")
    finally:
        await server.close()


async def test_the_python_client_sends_typed_items_with_a_locale(service: Service) -> None:
    base = str(service.client.make_url("/")).rstrip("/")
    async with NotifyClient(base, service.api_key) as notify:
        (note,) = await notify.send_batch([appointment_item("p2", "a-9", "confirmed", locale="es")])
        assert (note["title"], note["message"]) == ("Cita confirmada", "Su cita ha sido confirmada.")
        sent = await notify.send_lab_result("p2", "Lipid Panel", False, locale="de")
        assert (sent["title"], sent["message"]) == LAB_DE
