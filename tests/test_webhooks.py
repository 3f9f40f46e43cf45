"""Outgoing webhooks: signed deliveries to a real receiver that verifies them with the
`standardwebhooks` library, retries with exponential backoff on a `ManualClock`, dead letters and
the dashboard's retry button, the rules (at commit; not acknowledged within a time) and what a
payload holds. The kill -9 test is in test_webhooks_crash.py."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from diagnoxix.clock import ManualClock
from diagnoxix.config import ConfigError, Settings, settings_from_env
from diagnoxix.delivery.webhook_triggers import UNACKNOWLEDGED_CHECK
from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.keys import STORE, WEBHOOKS
from diagnoxix.models import NotificationDraft
from diagnoxix.rules.preferences import Preferences
from diagnoxix.rules.webhooks import (
    NOTIFICATION_CREATED,
    NOTIFICATION_UNACKNOWLEDGED,
    WebhookRule,
    check_webhook_url,
    shown_url,
)
from diagnoxix.store.opening import open_store
from diagnoxix.store.timer_records import Timer
from diagnoxix.store.webhook_records import WEBHOOKS_OWNER, WebhookEndpoint

from .conftest import Service
from .dashboard_support import LiveServer, StaffClient
from .servers import start_app
from .webhook_receiver import HANG, Receiver

MakeService = Callable[..., Awaitable[Service]]
EVENTS = (NOTIFICATION_CREATED, NOTIFICATION_UNACKNOWLEDGED, "test.event")


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        await receiver.close()


async def _receiver(receivers: list[Receiver], secret: str | None = None) -> Receiver:
    receiver = await Receiver(secret or new_webhook_secret()).start()
    receivers.append(receiver)
    return receiver


async def _endpoint(
    svc: Service, receiver: Receiver, events: tuple[str, ...] = EVENTS, secret: str | None = None
) -> WebhookEndpoint:
    store = svc.app[STORE]
    endpoint: WebhookEndpoint = await store.create_webhook_endpoint(
        receiver.url, secret or receiver.secret, events, "SMS gateway", "t"
    )
    return endpoint


async def _job(svc: Service, webhook_id: str) -> Timer:
    jobs: list[Timer] = await svc.app[STORE].get_timers(WEBHOOKS_OWNER, [webhook_id])
    return jobs[0]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def _state(svc: Service, webhook_id: str, state: str, attempts: int | None = None) -> Timer:
    async def reached() -> bool:
        job = await _job(svc, webhook_id)
        return job.state == state and (attempts is None or job.attempts == attempts)

    await _until(reached)
    return await _job(svc, webhook_id)


async def _quiet(receiver: Receiver, count: int, wait: float = 0.3) -> None:
    """Nothing more than `count` POSTs arrive within `wait` real seconds."""
    await asyncio.sleep(wait)
    assert len(receiver.received) == count, [r.webhook_id for r in receiver.received]


# -- signing and the outbox --------------------------------------------------------------------


async def test_an_enqueued_event_reaches_each_subscribed_endpoint_signed_once(
    make_service: MakeService, receivers: list[Receiver]
) -> None:
    svc = await make_service(webhook_allow_http_loopback=True)
    gateway = await _receiver(receivers)
    other = await _receiver(receivers)
    off = await _receiver(receivers)
    await _endpoint(svc, gateway)
    await _endpoint(svc, other, events=(NOTIFICATION_CREATED,))
    disabled = await _endpoint(svc, off)
    assert await svc.app[STORE].set_webhook_endpoint_enabled(disabled.id, False)

    ids = await svc.app[WEBHOOKS].enqueue("test.event", {"appointment_id": "appointment-456"})

    assert len(ids) == 1
    (got,) = await gateway.wait_for(1)
    assert got.verified, "the library verifies our signature with the endpoint's secret"
    assert got.webhook_id == ids[0]
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]+=*", got.headers["webhook-signature"])
    assert got.headers["Content-Type"] == "application/json"
    assert got.body is not None
    assert got.body["type"] == "test.event"
    assert got.body["data"] == {"appointment_id": "appointment-456"}
    done = await _state(svc, ids[0], "done")
    assert "content" not in done.payload, "a delivered body is not kept"
    await _quiet(gateway, 1)
    assert other.received == []
    assert off.received == []


async def test_a_receiver_with_another_secret_refuses_the_delivery_and_it_is_retried(
    make_service: MakeService, receivers: list[Receiver]
) -> None:
    svc = await make_service(clock=ManualClock(), webhook_allow_http_loopback=True)
    receiver = await _receiver(receivers)
    await _endpoint(svc, receiver, secret=new_webhook_secret())

    (webhook_id,) = await svc.app[WEBHOOKS].enqueue("test.event", {})

    (got,) = await receiver.wait_for(1)
    assert not got.verified
    job = await _state(svc, webhook_id, "pending", attempts=1)
    assert job.payload["last_error"] == "HTTP 401"
    assert receiver.answered == {}


async def test_failed_attempts_back_off_exponentially_with_the_same_webhook_id(
    make_service: MakeService, receivers: list[Receiver]
) -> None:
    # At a whole second: the store keeps milliseconds, the delays are exact.
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    svc = await make_service(clock=clock, webhook_allow_http_loopback=True, webhook_timeout_seconds=1.0)
    receiver = await _receiver(receivers)
    await _endpoint(svc, receiver)
    receiver.answer = 503

    (webhook_id,) = await svc.app[WEBHOOKS].enqueue("test.event", {"n": 1})
    await receiver.wait_for(1)
    job = await _state(svc, webhook_id, "pending", attempts=1)
    assert (job.due_at - clock.now()).total_seconds() == 10
    assert job.payload["last_error"] == "HTTP 503"

    clock.advance(9)
    await _quiet(receiver, 1)
    clock.advance(1)
    await receiver.wait_for(2)
    job = await _state(svc, webhook_id, "pending", attempts=2)
    assert (job.due_at - clock.now()).total_seconds() == 20

    receiver.answer = 404
    clock.advance(20)
    await receiver.wait_for(3)
    job = await _state(svc, webhook_id, "pending", attempts=3)
    assert job.payload["last_error"] == "HTTP 404"
    assert (job.due_at - clock.now()).total_seconds() == 40

    receiver.answer = HANG
    clock.advance(40)
    await receiver.wait_for(4)
    job = await _state(svc, webhook_id, "pending", attempts=4)
    assert job.payload["last_error"] == "timeout"

    receiver.answer = 200
    clock.advance(80)
    await receiver.wait_for(5)
    await _state(svc, webhook_id, "done")
    assert {r.webhook_id for r in receiver.received} == {webhook_id}
    assert all(r.verified for r in receiver.received)
    assert receiver.answered == {webhook_id: 1}


# -- dead letters ------------------------------------------------------------------------------


async def _live(settings: Settings, clock: ManualClock) -> LiveServer:
    running = await start_app(settings, clock=clock)
    server = LiveServer(running, str(running.make_url("")).rstrip("/"), settings)
    await server.add_staff("alice", "correct horse battery staple")
    return server


async def test_a_delivery_dead_after_its_retry_window_is_sent_again_from_the_dashboard(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    settings = Settings(
        db_path=tmp_path / "dead.sqlite3",
        secret_key="dashboard-test-secret-" + "y" * 40,
        log_json=False,
        webhook_allow_http_loopback=True,
        webhook_retry_for_seconds=60,
    )
    server = await _live(settings, clock)
    staff = StaffClient(server)
    try:
        receiver = await Receiver(new_webhook_secret()).start()
        receivers.append(receiver)
        store = server.app[STORE]
        await store.create_webhook_endpoint(receiver.url, receiver.secret, EVENTS, "SMS gateway", "t")
        receiver.answer = 503
        (webhook_id,) = await server.app[WEBHOOKS].enqueue("test.event", {"n": 1})
        await _state_on(server, webhook_id, "pending", attempts=1)
        clock.advance(10)
        await _state_on(server, webhook_id, "pending", attempts=2)
        clock.advance(20)
        await receiver.wait_for(3)

        async def dead() -> bool:
            return (await store.count_dead_webhooks()) == 1

        await _until(dead)
        clock.advance(3600)
        await _quiet(receiver, 3)
        metrics = await staff.get("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(await metrics.text())}
        assert families["diagnoxix_webhook_dead_letters"].samples[0].value == 1
        attempts = {s.labels["outcome"]: s.value for s in families["diagnoxix_webhook_attempts"].samples}
        assert (attempts["retried"], attempts["dead"], attempts["delivered"]) == (2, 1, 0)

        assert (await staff.login()).status == 303
        page = await (await staff.get("/dashboard/webhooks")).text()
        assert f'data-dead="{webhook_id}"' in page
        assert "HTTP 503" in page
        path = f"/dashboard/webhooks/dead/{webhook_id}/retry"
        assert (await staff.post(path, {})).status == 403, "no CSRF token"
        token = await staff.csrf("/dashboard/webhooks")
        other = await staff.post(path, {"csrf_token": token}, origin="http://evil.example")
        assert other.status == 403
        assert await store.count_dead_webhooks() == 1

        receiver.answer = 200
        answer = await staff.post(path, {"csrf_token": token})
        assert answer.status == 303, await answer.text()
        await receiver.wait_for(4)
        job = await _state_on(server, webhook_id, "done")
        assert receiver.answered == {webhook_id: 1}
        assert job.payload["revived_by"] == "staff:alice"
        again = await staff.post(path, {"csrf_token": token})
        assert again.status == 404, "no longer a dead letter"
        page = await (await staff.get("/dashboard/webhooks")).text()
        assert "No dead letters." in page
        await store.flush()
        assert any(e["action"] == "webhook.retry" for e in await store.audit_entries())
    finally:
        await staff.close()
        await server.close()


async def _state_on(server: LiveServer, webhook_id: str, state: str, attempts: int | None = None) -> Timer:
    store = server.app[STORE]

    async def reached() -> bool:
        job = (await store.get_timers(WEBHOOKS_OWNER, [webhook_id]))[0]
        return bool(job.state == state and (attempts is None or job.attempts == attempts))

    await _until(reached)
    return (await store.get_timers(WEBHOOKS_OWNER, [webhook_id]))[0]


# -- endpoints in the dashboard ----------------------------------------------------------------


async def test_staff_create_an_endpoint_whose_secret_is_shown_once_and_signs(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    settings = Settings(
        db_path=tmp_path / "endpoints.sqlite3",
        secret_key="dashboard-test-secret-" + "y" * 40,
        log_json=False,
        webhook_allow_http_loopback=True,
    )
    server = await _live(settings, ManualClock())
    staff = StaffClient(server)
    try:
        assert (await staff.login()).status == 303
        token = await staff.csrf("/dashboard/webhooks")
        form = {"csrf_token": token, "description": "SMS gateway", "events": "test.event"}
        for url, says in [
            ("http://gateway.example/hooks", "must be https://"),
            ("https://user:pw@gateway.example/hooks", "no credentials"),
            ("ftp://gateway.example/", "must be https://"),
        ]:
            refused = await staff.post("/dashboard/webhooks", {**form, "url": url})
            assert refused.status == 422
            assert says in await refused.text()
        no_events = await staff.post(
            "/dashboard/webhooks", {"csrf_token": token, "url": "https://g.example/"}
        )
        assert no_events.status == 422

        receiver = await Receiver("whsec_placeholder").start()
        receivers.append(receiver)
        created = await staff.post("/dashboard/webhooks", {**form, "url": receiver.url + "?token=abc123"})
        assert created.status == 201
        match = re.search(r'value="(whsec_[A-Za-z0-9+/=]+)" data-new-secret', await created.text())
        assert match
        receiver.secret = match.group(1)
        listing = await (await staff.get("/dashboard/webhooks")).text()
        assert receiver.secret not in listing, "the secret is shown once"
        assert "abc123" not in listing, "a token in the URL's query is not shown"

        (webhook_id,) = await server.app[WEBHOOKS].enqueue("test.event", {"n": 1})
        (got,) = await receiver.wait_for(1)
        assert got.verified
        assert got.webhook_id == webhook_id

        (endpoint,) = await server.app[STORE].webhook_endpoints()
        token = await staff.csrf("/dashboard/webhooks")
        disabled = await staff.post(f"/dashboard/webhooks/{endpoint.id}/disable", {"csrf_token": token})
        assert disabled.status == 303
        assert await server.app[WEBHOOKS].enqueue("test.event", {"n": 2}) == []
        removed = await staff.post(f"/dashboard/webhooks/{endpoint.id}/delete", {"csrf_token": token})
        assert removed.status == 303
        assert await server.app[STORE].webhook_endpoints() == []
    finally:
        await staff.close()
        await server.close()


# -- rules -------------------------------------------------------------------------------------


async def test_a_rule_at_commit_sends_ids_only_unless_words_are_opted_in(
    make_service: MakeService, receivers: list[Receiver]
) -> None:
    rules = (
        WebhookRule(types=("lab_note",), priorities=("high", "critical")),
        WebhookRule(types=("appt_note",), words=True),
    )
    svc = await make_service(webhook_allow_http_loopback=True, webhook_rules=rules)
    receiver = await _receiver(receivers)
    await _endpoint(svc, receiver)

    lab = await svc.send("user-1", "Lab note", type="lab_note", priority="high", data={"value": "7.1"})
    await svc.send("user-1", "Lab note", type="lab_note", priority="normal")
    appt = await svc.send(
        "user-2", "Appointment", message="Tomorrow 2 PM", type="appt_note", data={"room": 3}
    )
    await svc.send("user-3", "Other", type="other_note", priority="critical")
    resp = await svc.client.post(
        "/v1/broadcasts", json={"title": "Closed", "message": "x"}, headers=svc.auth()
    )
    assert resp.status in (200, 201), await resp.text()

    got = await receiver.wait_for(2)
    await _quiet(receiver, 2)
    bodies = {r.body["data"]["notification_id"]: r.body for r in got if r.body is not None}
    assert all(r.verified for r in got)
    assert bodies[lab["id"]]["type"] == NOTIFICATION_CREATED
    assert bodies[lab["id"]]["data"] == {
        "notification_id": lab["id"],
        "user_id": "user-1",
        "type": "lab_note",
        "priority": "high",
        "created_at": lab["timestamp"],
    }
    assert bodies[appt["id"]]["data"]["title"] == "Appointment"
    assert bodies[appt["id"]]["data"]["message"] == "Tomorrow 2 PM"
    assert "data" not in bodies[appt["id"]]["data"]
    assert "room" not in json.dumps(bodies[appt["id"]])


async def test_a_user_who_switched_webhooks_off_or_is_in_quiet_hours_gets_only_critical_ones(
    make_service: MakeService, receivers: list[Receiver]
) -> None:
    rules = (WebhookRule(types=("lab_note", "appt_note", "sepsis_alert")),)
    svc = await make_service(
        webhook_allow_http_loopback=True, webhook_rules=rules, critical_categories=("sepsis_alert",)
    )
    receiver = await _receiver(receivers)
    await _endpoint(svc, receiver)
    store = svc.app[STORE]
    # user-1 wants no webhook for appointments; user-2 is always in quiet hours (a span of 23:59).
    await store.put_preferences("user-1", Preferences(channels={"appt_note": {"webhook": False}}))
    await store.put_preferences("user-2", Preferences(time_zone="Asia/Tokyo", quiet_hours=(0, 1439)))
    now_minute = datetime.now(ZoneInfo("Asia/Tokyo"))
    if now_minute.hour == 23 and now_minute.minute == 59:  # the one minute outside: wait it out
        await asyncio.sleep(61 - now_minute.second)

    skipped = [
        await svc.send("user-1", "Appointment", type="appt_note"),
        await svc.send("user-2", "Lab", type="lab_note"),
    ]
    sent = [
        await svc.send("user-1", "Lab", type="lab_note"),
        await svc.send("user-2", "Critical lab", type="lab_note", priority="critical"),
        await svc.send("user-2", "Sepsis", type="sepsis_alert"),
        await svc.send("user-3", "Appointment", type="appt_note"),
    ]
    got = await receiver.wait_for(len(sent))
    await _quiet(receiver, len(sent))
    ids = {r.body["data"]["notification_id"] for r in got if r.body is not None}
    assert ids == {n["id"] for n in sent}
    assert not ids & {n["id"] for n in skipped}


async def _ack(svc: Service, user: str, notification_id: str) -> None:
    ws = await svc.connect(user, v1=True, since=0)
    try:
        async with asyncio.timeout(3):
            while True:
                frame = json.loads((await ws.receive()).data)
                if frame.get("id") == notification_id:
                    break
            await ws.send_json({"type": "ack", "ids": [notification_id]})
            while json.loads((await ws.receive()).data)["type"] != "ack":
                pass
    finally:
        await ws.close()


async def test_an_unacknowledged_rule_sends_only_what_nobody_acknowledged_in_time(
    make_service: MakeService, receivers: list[Receiver]
) -> None:
    clock = ManualClock()
    rules = (WebhookRule(types=("lab_note",), when="unacknowledged", after_seconds=300),)
    svc = await make_service(clock=clock, webhook_allow_http_loopback=True, webhook_rules=rules)
    receiver = await _receiver(receivers)
    await _endpoint(svc, receiver)
    seen = await svc.send("user-1", "Lab note", type="lab_note")
    unseen = await svc.send("user-2", "Lab note", type="lab_note")
    await _ack(svc, "user-1", seen["id"])
    store = svc.app[STORE]

    async def checks_stored() -> bool:
        return (
            len(await store.pending_timers(WEBHOOKS_OWNER, UNACKNOWLEDGED_CHECK, after_id=None, limit=10))
            == 2
        )

    await _until(checks_stored)
    clock.advance(299)
    await _quiet(receiver, 0)
    clock.advance(1)
    (got,) = await receiver.wait_for(1)
    await _quiet(receiver, 1)
    assert got.verified
    assert got.body is not None
    assert got.body["type"] == NOTIFICATION_UNACKNOWLEDGED
    assert got.body["data"]["notification_id"] == unseen["id"]
    assert "title" not in got.body["data"]

    async def checks_done() -> bool:
        pending = await store.pending_timers(WEBHOOKS_OWNER, UNACKNOWLEDGED_CHECK, after_id=None, limit=10)
        return not pending

    await _until(checks_done)


async def test_notifications_committed_but_not_yet_applied_at_a_crash_are_found_at_start(
    make_settings: Callable[..., Settings], receivers: list[Receiver]
) -> None:
    """What a kill -9 between a commit and the rules' write leaves: notifications past the rules'
    cursor. The next start applies the rules to them, once; what was applied before is not."""
    receiver = await _receiver(receivers)
    settings = make_settings(
        webhook_allow_http_loopback=True, webhook_rules=(WebhookRule(types=("lab_note",)),)
    )
    drafts = [
        NotificationDraft(user_id=f"u{i}", type="lab_note", title="Lab note", message="", data={})
        for i in range(3)
    ]
    async with open_store(settings) as store:
        await store.create_webhook_endpoint(receiver.url, receiver.secret, EVENTS, "", "t")
        await store.insert_notifications(drafts[:1])
        await store.enqueue_webhooks([], through_seq=await store.last_seq())
        missed = await store.insert_notifications(drafts[1:])
    server = await start_app(settings)
    try:
        got = await receiver.wait_for(2)
        await _quiet(receiver, 2)
        assert {r.body["data"]["notification_id"] for r in got if r.body} == {n.id for n in missed}
    finally:
        await server.close()
    server = await start_app(settings)
    try:
        await _quiet(receiver, 2)
    finally:
        await server.close()


# -- configuration and hygiene -----------------------------------------------------------------


def test_the_rules_file_is_read_from_the_variable_and_a_mistake_names_it(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\ntypes = ["lab_result_ready"]\npriorities = ["high", "critical"]\n'
        'when = "unacknowledged"\nafter_seconds = 1800\n\n[[rule]]\ntypes = ["appointment_cancelled"]\n'
        "words = true\n",
        encoding="utf-8",
    )
    settings = settings_from_env({"DIAGNOXIX_WEBHOOK_RULES": str(rules)})
    assert settings.webhook_rules == (
        WebhookRule(("lab_result_ready",), ("high", "critical"), "unacknowledged", 1800, False),
        WebhookRule(("appointment_cancelled",), (), "commit", 0, True),
    )
    for text, says in [
        ('[[rule]]\nwhen = "later"\n', "rule[0].when"),
        ('[[rule]]\nwhen = "unacknowledged"\n', "rule[0].after_seconds"),
        ('[[rule]]\npriorities = ["urgent"]\n', "rule[0].priorities"),
        ("[[rule]]\nwords = 1\n", "rule[0].words"),
        ("[[rule]]\ntype = []\n", "unknown key 'type'"),
        ("rule = [", "not TOML"),
    ]:
        rules.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(says)) as raised:
            settings_from_env({"DIAGNOXIX_WEBHOOK_RULES": str(rules)})
        assert "DIAGNOXIX_WEBHOOK_RULES" in str(raised.value)
    with pytest.raises(ConfigError, match="DIAGNOXIX_WEBHOOK_RULES"):
        settings_from_env({"DIAGNOXIX_WEBHOOK_RULES": str(tmp_path / "missing.toml")})


def test_only_https_endpoints_unless_loopback_http_is_allowed() -> None:
    assert check_webhook_url("https://sms.clinic.example/hooks?key=1", allow_http_loopback=False) is None
    assert check_webhook_url("http://127.0.0.1:8080/h", allow_http_loopback=False) is not None
    assert check_webhook_url("http://127.0.0.1:8080/h", allow_http_loopback=True) is None
    assert check_webhook_url("http://[::1]:8080/h", allow_http_loopback=True) is None
    assert check_webhook_url("http://10.0.0.1/h", allow_http_loopback=True) is not None
    assert check_webhook_url("https://a:b@sms.example/", allow_http_loopback=True) is not None
    assert check_webhook_url("https://sms.example:port/", allow_http_loopback=True) is not None
    assert check_webhook_url("https:// sms.example/", allow_http_loopback=True) is not None
    assert shown_url("https://sms.example/h?token=abc") == "https://sms.example/h?…"


async def test_no_log_line_holds_the_secret_the_url_or_the_body(
    make_service: MakeService, receivers: list[Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    svc = await make_service(clock=ManualClock(), webhook_allow_http_loopback=True)
    receiver = await _receiver(receivers)
    store = svc.app[STORE]
    url = receiver.url + "?token=query-secret-123"
    await store.create_webhook_endpoint(url, receiver.secret, EVENTS, "", "t")
    receiver.answer = 500
    await svc.app[WEBHOOKS].enqueue("test.event", {"words": "patient-words-456"})
    await receiver.wait_for(1)
    receiver.answer = 200
    await asyncio.sleep(0.2)
    logged = caplog.text + json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert "webhooks.retry" in logged
    for secret in (
        receiver.secret,
        receiver.secret.removeprefix("whsec_"),
        "query-secret-123",
        "patient-words-456",
    ):
        assert secret not in logged
