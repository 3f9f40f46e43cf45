"""Digests (`DIAGNOXIX_DIGEST`) and retractions on the outside channels, end to end: the real
server, a push service in the test that checks the VAPID signature and decrypts each payload
(tests/push_service.py), a real webhook receiver that verifies signatures, and a `ManualClock` to
end the windows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.config import ConfigError, settings_from_env
from diagnoxix.delivery.digests import DIGEST_OWNER, PUSH_DIGEST, digest_key
from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.keys import PUSH, STORE
from diagnoxix.rules.webhooks import NOTIFICATION_CREATED, NOTIFICATION_DIGEST, WebhookRule
from diagnoxix.store.timer_records import Timer

from .conftest import Service
from .push_service import Browser, PushService
from .webhook_receiver import Receiver

MakeService = Callable[..., Awaitable[Service]]
PUSH_SETTINGS: dict[str, Any] = {
    "push_hosts": ("127.0.0.1",),
    "push_allow_loopback": True,
    "push_delays": (("low", None), ("normal", 1), ("high", 1), ("critical", 1)),
}
LAB = "lab_result_ready"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = await Receiver(new_webhook_secret()).start()
    try:
        yield made
    finally:
        await made.close()


async def _service(make_service: MakeService, pushes: PushService, **overrides: Any) -> Service:
    svc = await make_service(**(PUSH_SETTINGS | overrides))
    pushes.vapid_key = svc.app[PUSH].public_key
    return svc


async def _subscribe(svc: Service, user: str, browser: Browser) -> None:
    resp = await svc.client.post(
        f"/v1/users/{user}/push-subscriptions",
        json=browser.subscription(),
        headers={"Authorization": f"Bearer {svc.token(user)}"},
    )
    assert resp.status == 201, await resp.text()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _digest(svc: Service, kind: str, user: str, count: int) -> Timer:
    """The user's pending digest of LAB, once it names `count` notifications."""
    found: list[Timer] = []

    async def joined() -> bool:
        job = await svc.app[STORE].find_timer_by_key(DIGEST_OWNER, kind, digest_key(user, LAB))
        found[:] = [job] if job is not None else []
        return job is not None and len(job.payload["notification_ids"]) == count

    await _until(joined)
    return found[0]


async def _frames(ws: Any, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(got) < count:
            msg = await ws.receive_json()
            if "seq" in msg and msg.get("type") not in {"welcome", "pong", "error"}:
                got.append(msg)
    return got


def test_the_digest_setting_reads_type_seconds_pairs_and_names_a_mistake() -> None:
    settings = settings_from_env({"DIAGNOXIX_DIGEST": "lab_result_ready=300, message=60"})
    assert settings.digest_windows == (("lab_result_ready", 300), ("message", 60))
    assert settings_from_env({}).digest_windows == ()
    for wrong in ("lab_result_ready", "lab_result_ready=0", "lab_result_ready=x", "Bad Type=5"):
        with pytest.raises(ConfigError, match="DIAGNOXIX_DIGEST"):
            settings_from_env({"DIAGNOXIX_DIGEST": wrong})


async def test_a_window_of_one_type_goes_out_as_one_push_while_the_socket_gets_each(
    make_service: MakeService, pushes: PushService
) -> None:
    clock = ManualClock()
    svc = await _service(make_service, pushes, clock=clock, digest_windows=((LAB, 60),))
    ana, ben = pushes.browser(), pushes.browser()
    await _subscribe(svc, "ana", ana)
    await _subscribe(svc, "ben", ben)
    ws = await svc.connect("ana", v1=True, since=0)
    labs = [await svc.send("ana", f"Result {i}", type=LAB) for i in range(3)]
    other = await svc.send("ana", "Appointment", type="appointment_reminder")
    urgent = await svc.send("ana", "Critical result", type=LAB, priority="critical")
    bens = await svc.send("ben", "Result", type=LAB)
    # The socket gets every one at once, digested or not.
    frames = await _frames(ws, 5)
    assert [f["id"] for f in frames] == [*(n["id"] for n in labs), other["id"], urgent["id"]]
    # Nobody acknowledges: once the delay is over, the others are pushed one by one, the labs join
    # their user's digest (a critical one is never gathered).
    clock.advance(1)
    await _digest(svc, PUSH_DIGEST, "ana", 3)
    await _digest(svc, PUSH_DIGEST, "ben", 1)

    async def singles() -> bool:
        return len(pushes.accepted()) == 2

    await _until(singles)
    assert {r.payload["id"] for r in pushes.accepted(ana)} == {other["id"], urgent["id"]}
    await asyncio.sleep(0.3)
    assert len(pushes.accepted()) == 2  # the labs wait for their window

    clock.advance(60)

    async def digests() -> bool:
        return len(pushes.accepted()) == 4

    await _until(digests)
    await asyncio.sleep(0.3)
    assert len(pushes.received) == 4  # one digest per user and window, never more
    (ana_digest,) = [r for r in pushes.accepted(ana) if "ids" in r.payload]
    assert ana_digest.payload == {
        "ids": [n["id"] for n in labs],
        "count": 3,
        "title": "3 new messages from your clinic",
    }
    assert ana_digest.headers["Topic"] == "diagnoxix-normal"
    (ben_digest,) = [r for r in pushes.accepted(ben) if "ids" in r.payload]
    assert ben_digest.payload["ids"] == [bens["id"]]
    # The window is closed: the next lab result starts a new one.
    later = await svc.send("ana", "Result 4", type=LAB)
    clock.advance(1)
    fresh = await _digest(svc, PUSH_DIGEST, "ana", 1)
    assert fresh.payload["notification_ids"] == [later["id"]]
    assert fresh.state == "pending"
    await ws.close()


async def test_a_window_goes_out_as_one_webhook_event_without_what_was_retracted(
    make_service: MakeService, receiver: Receiver
) -> None:
    clock = ManualClock()
    rules = (WebhookRule(types=(LAB, "appointment_reminder")),)
    svc = await make_service(
        clock=clock, webhook_allow_http_loopback=True, webhook_rules=rules, digest_windows=((LAB, 300),)
    )
    await svc.app[STORE].create_webhook_endpoint(
        receiver.url, receiver.secret, (NOTIFICATION_CREATED, NOTIFICATION_DIGEST), "SMS", "t"
    )
    labs = [await svc.send("ana", f"Result {i}", type=LAB) for i in range(3)]
    other = await svc.send("ana", "Appointment", type="appointment_reminder")
    bens = await svc.send("ben", "Result", type=LAB)
    (created,) = await receiver.wait_for(1)
    assert created.body is not None
    assert created.body["type"] == NOTIFICATION_CREATED
    assert created.body["data"]["notification_id"] == other["id"]
    await _digest(svc, "webhook_digest", "ana", 3)
    resp = await svc.client.post(
        f"/v1/notifications/{labs[1]['id']}/retract", json={"reason": "wrong patient"}, headers=svc.auth()
    )
    assert resp.status == 200, await resp.text()
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1

    clock.advance(301)
    got = await receiver.wait_for(3)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 3
    events = {r.body["data"]["user_id"]: r.body for r in got[1:] if r.body is not None}
    assert all(r.verified for r in got)
    assert {e["type"] for e in events.values()} == {NOTIFICATION_DIGEST}
    ana = events["ana"]["data"]
    assert ana["notification_ids"] == [labs[0]["id"], labs[2]["id"]]
    assert (ana["type"], ana["count"], ana["priority"]) == (LAB, 2, "normal")
    assert "title" not in ana
    assert "Result" not in str(events["ana"])
    assert events["ben"]["data"]["notification_ids"] == [bens["id"]]
    assert events["ben"]["data"]["count"] == 1


async def test_a_retracted_push_is_replaced_by_a_push_with_the_same_topic(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    ana, ben = pushes.browser(), pushes.browser()
    await _subscribe(svc, "ana", ana)
    await _subscribe(svc, "ben", ben)
    note = await svc.send("ana", "Result for the wrong patient", priority="high")
    quiet = await svc.send("ben", "Low", priority="low")  # low priority: never pushed

    async def pushed() -> bool:
        return len(pushes.accepted(ana)) == 1

    await _until(pushed)
    (first,) = pushes.accepted(ana)
    assert first.payload["id"] == note["id"]
    for nid in (note["id"], quiet["id"]):
        resp = await svc.client.post(
            f"/v1/notifications/{nid}/retract", json={"reason": "sent in error"}, headers=svc.auth()
        )
        assert resp.status == 200, await resp.text()

    async def replaced() -> bool:
        return len(pushes.accepted(ana)) == 2

    await _until(replaced)
    second = pushes.accepted(ana)[1]
    assert second.payload == {"retracted": note["id"]}
    assert second.headers["Topic"] == first.headers["Topic"] == "diagnoxix-high"
    assert second.headers["Urgency"] == "high"
    await asyncio.sleep(0.3)
    assert len(pushes.received) == 2  # once, and nothing to ben, who was never pushed
