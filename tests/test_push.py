"""Web Push end to end with real crypto: the real server pushes to a push service in the test
(tests/push_service.py) that checks the VAPID signature and decrypts each payload with the
subscription's private key. Each answer a push service gives (201, 404, 410, 429, 5xx) has its
test, and so has routing: a connected v1 client that acknowledges in time gets no push."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.delivery.push.jobs import MAX_IN_FLIGHT
from diagnoxix.keys import PUSH, STORE
from diagnoxix.rules.escalation import Policy, Step
from diagnoxix.rules.preferences import Preferences
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_SEND, NewPushSubscription

from .conftest import Service
from .push_service import HANG, HANG_SECONDS, Browser, PushService, b64url_decode

MakeService = Callable[..., Awaitable[Service]]
# Pushes to loopback are for tests; delays of a second keep the routing tests short.
PUSH_SETTINGS: dict[str, Any] = {
    "push_hosts": ("127.0.0.1",),
    "push_allow_loopback": True,
    "push_delays": (("low", None), ("normal", 1), ("high", 1), ("critical", 1)),
}
GENERIC = "New message from your clinic"


async def _service(make_service: MakeService, pushes: PushService, **overrides: Any) -> Service:
    svc = await make_service(**(PUSH_SETTINGS | overrides))
    pushes.vapid_key = svc.app[PUSH].public_key
    return svc


async def _subscribe(svc: Service, user: str, browser: Browser) -> dict[str, Any]:
    resp = await svc.client.post(
        f"/v1/users/{user}/push-subscriptions",
        json=browser.subscription(),
        headers={"Authorization": f"Bearer {svc.token(user)}"},
    )
    assert resp.status == 201, await resp.text()
    return (await resp.json())["subscription"]  # type: ignore[no-any-return]


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _attempts(svc: Service, notification_id: str, count: int) -> list[Any]:
    """The push services' answers recorded for a notification, once there are `count`."""
    deadline = time.monotonic() + 10
    while True:
        found: list[Any] = (await svc.app[STORE].push_attempts([notification_id])).get(notification_id, [])
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} answers recorded, not {count}"
        await asyncio.sleep(0.05)


async def _subscriptions(svc: Service, user: str) -> list[dict[str, Any]]:
    resp = await svc.client.get(f"/v1/users/{user}/push-subscriptions", headers=svc.auth())
    assert resp.status == 200
    return (await resp.json())["subscriptions"]  # type: ignore[no-any-return]


# -- the public key and subscriptions --------------------------------------------------------------


async def test_the_public_key_is_a_p256_point_made_once_and_kept_in_the_database(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    resp = await svc.client.get("/v1/push/public-key")
    assert resp.status == 200
    key = (await resp.json())["public_key"]
    raw = b64url_decode(key)
    assert len(raw) == 65
    assert raw[0] == 4
    stored = await svc.app[STORE].get_or_create_meta("vapid_private_key", lambda: "not made again")
    assert "PRIVATE KEY" in stored


async def test_a_user_registers_lists_and_deletes_their_own_subscriptions(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    browser = pushes.browser()
    made = await _subscribe(svc, "ana", browser)
    assert made["endpoint_host"] == "127.0.0.1"
    assert "endpoint" not in made  # a secret: never shown back
    again = await _subscribe(svc, "ana", browser)
    assert again["id"] == made["id"]  # the same endpoint is one subscription
    ana = {"Authorization": f"Bearer {svc.token('ana')}"}
    listed = await svc.client.get("/v1/users/ana/push-subscriptions", headers=ana)
    assert [s["id"] for s in (await listed.json())["subscriptions"]] == [made["id"]]
    ben = {"Authorization": f"Bearer {svc.token('ben')}"}
    other = await svc.client.get("/v1/users/ana/push-subscriptions", headers=ben)
    assert other.status == 403
    refused = await svc.client.delete(f"/v1/users/ben/push-subscriptions/{made['id']}", headers=ben)
    assert refused.status == 404
    gone = await svc.client.delete(f"/v1/users/ana/push-subscriptions/{made['id']}", headers=ana)
    assert gone.status == 200
    assert await _subscriptions(svc, "ana") == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "http://fcm.googleapis.com/fcm/send/x"}, "endpoint"),  # not https
        ({"endpoint": "https://evil.example/push"}, "endpoint"),  # not a push service
        ({"endpoint": "https://user:pw@fcm.googleapis.com/x"}, "endpoint"),
        ({"keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, "keys.p256dh"),
        ({"keys": {"auth": "AAAA"}}, "keys.p256dh"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_a_subscription_that_breaks_a_rule_is_a_422_naming_it(
    make_service: MakeService, pushes: PushService, change: dict[str, Any], field: str
) -> None:
    svc = await _service(make_service, pushes, push_hosts=("fcm.googleapis.com",), push_allow_loopback=False)
    body = pushes.browser().subscription()
    body["endpoint"] = "https://fcm.googleapis.com/fcm/send/abc"
    body.update(change)
    resp = await svc.client.post("/v1/users/ana/push-subscriptions", json=body, headers=svc.auth())
    assert resp.status == 422, await resp.text()
    assert field in (await resp.json())["error"]["details"]


async def test_a_loopback_endpoint_is_refused_unless_the_development_setting_allows_it(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes, push_allow_loopback=False, push_hosts=("*",))
    resp = await svc.client.post(
        "/v1/users/ana/push-subscriptions", json=pushes.browser().subscription(), headers=svc.auth()
    )
    assert resp.status == 422
    assert "endpoint" in (await resp.json())["error"]["details"]


async def test_registering_past_the_limit_replaces_the_oldest(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes, push_subscriptions_per_user=2)
    first = await _subscribe(svc, "ana", pushes.browser())
    second = await _subscribe(svc, "ana", pushes.browser())
    third = await _subscribe(svc, "ana", pushes.browser())
    assert {s["id"] for s in await _subscriptions(svc, "ana")} == {second["id"], third["id"]}
    assert first["id"] not in {s["id"] for s in await _subscriptions(svc, "ana")}


async def test_the_service_worker_reads_one_notification_with_the_users_token(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    note = await svc.send("ana", "Lab Result Ready", message="Your result is ready.")
    ana = {"Authorization": f"Bearer {svc.token('ana')}"}
    resp = await svc.client.get(f"/v1/users/ana/notifications/{note['id']}", headers=ana)
    assert resp.status == 200
    assert (await resp.json())["notification"]["message"] == "Your result is ready."
    ben = {"Authorization": f"Bearer {svc.token('ben')}"}
    assert (await svc.client.get(f"/v1/users/ben/notifications/{note['id']}", headers=ben)).status == 404
    assert (await svc.client.get(f"/v1/users/ana/notifications/{note['id']}", headers=ben)).status == 403


# -- what leaves the server, and each answer of the push service ---------------------------------


async def test_201_a_push_carries_only_the_generic_title_and_id_signed_and_encrypted(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    browser = pushes.browser()
    sub = await _subscribe(svc, "ana", browser)
    note = await svc.send("ana", "HIV test result", message="Positive", priority="critical")
    await _until(lambda: len(pushes.accepted()) == 1)
    (got,) = pushes.received
    assert got.payload == {"id": note["id"], "title": GENERIC}
    assert got.headers["Urgency"] == "high"
    assert got.headers["Topic"] == "diagnoxix-critical"
    assert 0 < int(got.headers["TTL"]) <= 24 * 3600
    assert got.claims["aud"] == pushes.origin
    assert got.claims["sub"].startswith("mailto:")
    assert pushes.refused == []
    (attempt,) = await _attempts(svc, note["id"], 1)
    assert (attempt.status, attempt.outcome, attempt.subscription_id) == (201, "sent", sub["id"])
    await asyncio.sleep(0.5)
    assert len(pushes.received) == 1  # never twice


async def test_a_type_named_in_the_setting_carries_its_own_title(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes, push_titled_types=("appointment_reminder",))
    await _subscribe(svc, "ana", pushes.browser())
    await svc.send("ana", "Appointment tomorrow", type="appointment_reminder")
    await svc.send("ana", "Lab result", type="lab_result_ready")
    await _until(lambda: len(pushes.accepted()) == 2)
    assert sorted(r.payload["title"] for r in pushes.received) == ["Appointment tomorrow", GENERIC]


@pytest.mark.parametrize("status", [404, 410])
async def test_404_and_410_remove_the_subscription(
    make_service: MakeService, pushes: PushService, status: int
) -> None:
    svc = await _service(make_service, pushes)
    gone, kept = pushes.browser(status), pushes.browser()
    await _subscribe(svc, "ana", gone)
    await _subscribe(svc, "ana", kept)
    note = await svc.send("ana", "Hello")
    await _until(lambda: len(pushes.received) == 2)

    async def remaining() -> list[str]:
        return [s["id"] for s in await _subscriptions(svc, "ana")]

    deadline = time.monotonic() + 5
    while len(await remaining()) != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    attempts = await _attempts(svc, note["id"], 2)
    assert sorted((a.status, a.outcome) for a in attempts) == [(201, "sent"), (status, "gone")]
    await svc.send("ana", "Again")
    await _until(lambda: len(pushes.received) == 3)
    await asyncio.sleep(0.3)
    assert [r.browser_id for r in pushes.received[2:]] == [kept.id]


async def test_429_is_tried_again_after_retry_after(make_service: MakeService, pushes: PushService) -> None:
    svc = await _service(make_service, pushes)
    browser = pushes.browser((429, "2"))
    await _subscribe(svc, "ana", browser)
    await svc.send("ana", "Hello")
    await _until(lambda: len(pushes.accepted()) == 1)
    first, second = pushes.received
    assert first.status == 429
    assert second.at - first.at >= 1.9  # honoured Retry-After: 2
    assert first.payload == second.payload


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_tried_again_with_backoff(
    make_service: MakeService, pushes: PushService, status: int
) -> None:
    svc = await _service(make_service, pushes)
    browser = pushes.browser(status, status)
    await _subscribe(svc, "ana", browser)
    note = await svc.send("ana", "Hello")
    await _until(lambda: len(pushes.accepted()) == 1)
    statuses = [r.status for r in pushes.received]
    assert statuses == [status, status, 201]
    gaps = [b.at - a.at for a, b in zip(pushes.received, pushes.received[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.5  # growing: 1 s, then 2 s
    attempts = await _attempts(svc, note["id"], 3)
    assert [a.outcome for a in attempts] == ["retry", "retry", "sent"]


# -- routing -------------------------------------------------------------------------------------


async def test_an_acknowledgement_within_the_delay_cancels_the_push(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    await _subscribe(svc, "ana", pushes.browser())
    ws = await svc.connect("ana", v1=True, since=0)
    await ws.receive_json(timeout=5)  # welcome
    note = await svc.send("ana", "Hello")
    frame = await ws.receive_json(timeout=5)
    assert frame["id"] == note["id"]
    await ws.send_json({"type": "ack", "ids": [note["id"]]})
    await ws.receive_json(timeout=5)
    await asyncio.sleep(2.0)  # past the 1 s delay
    assert pushes.received == []
    await ws.close()


async def test_an_unacknowledged_notification_is_pushed_after_its_delay(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    await _subscribe(svc, "ana", pushes.browser())
    ws = await svc.connect("ana", v1=True, since=0)
    await ws.receive_json(timeout=5)
    sent_at = time.monotonic()
    note = await svc.send("ana", "Hello")
    assert (await ws.receive_json(timeout=5))["id"] == note["id"]  # shown, never acknowledged
    await _until(lambda: len(pushes.accepted()) == 1)
    assert pushes.received[0].at - sent_at >= 0.9
    assert pushes.received[0].payload["id"] == note["id"]
    await ws.close()


async def test_low_priority_is_never_pushed_and_broadcasts_are_not_pushed(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    await _subscribe(svc, "ana", pushes.browser())
    await svc.send("ana", "Newsletter", priority="low")
    resp = await svc.client.post("/v1/broadcasts", json={"title": "Closed Monday"}, headers=svc.auth())
    assert resp.status == 201, await resp.text()
    await svc.send("ana", "Marker", priority="high")
    await _until(lambda: len(pushes.accepted()) == 1)
    await asyncio.sleep(0.5)
    assert len(pushes.received) == 1


async def test_a_subscription_whose_key_is_not_a_curve_point_is_removed_at_its_first_push(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes)
    body = pushes.browser().subscription()
    body["keys"]["p256dh"] = "B" + "A" * 86  # 0x04 and zeros: the right shape, not a point
    resp = await svc.client.post("/v1/users/ana/push-subscriptions", json=body, headers=svc.auth())
    assert resp.status == 201, await resp.text()
    note = await svc.send("ana", "Hello")
    (attempt,) = await _attempts(svc, note["id"], 1)
    assert (attempt.status, attempt.outcome) == (-1, "gone")
    assert await _subscriptions(svc, "ana") == []
    assert pushes.received == []


async def test_a_push_never_reaches_a_loopback_or_private_address_unless_allowed(
    make_service: MakeService, pushes: PushService
) -> None:
    """SSRF: a subscription that points inside the network (stored before the rules changed, or
    a public name that resolves inside) gets no request: the resolver keeps public addresses only."""
    svc = await _service(make_service, pushes, push_allow_loopback=False, push_hosts=("*",))
    store = svc.app[STORE]
    port = pushes.origin.rsplit(":", 1)[1]
    for n, host in enumerate(("127.0.0.1", "localhost")):
        browser = pushes.browser()
        body = browser.subscription()
        endpoint = f"http://{host}:{port}/push/{browser.id}"
        await store.add_push_subscription(
            NewPushSubscription(f"u{n}", endpoint, body["keys"]["p256dh"], body["keys"]["auth"], host),
            limit=5,
        )
        svc.app[PUSH].router.subscribed.add(f"u{n}")
        note = await svc.send(f"u{n}", "Hello")
        (attempt,) = await _attempts(svc, note["id"], 1)
        assert (attempt.status, attempt.outcome) == (0, "retry")
    assert pushes.received == []
    assert pushes.refused == []


async def test_a_redirect_is_not_followed(make_service: MakeService, pushes: PushService) -> None:
    svc = await _service(make_service, pushes)
    await _subscribe(svc, "ana", pushes.browser(307))
    note = await svc.send("ana", "Hello")
    (attempt,) = await _attempts(svc, note["id"], 1)
    assert (attempt.status, attempt.outcome) == (307, "failed")
    await asyncio.sleep(0.3)
    assert len(pushes.received) == 1


async def test_a_push_service_that_does_not_answer_holds_up_no_other_push(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes, push_timeout_seconds=2.0)
    slow = pushes.browser(HANG)
    await _subscribe(svc, "ana", slow)
    await _subscribe(svc, "ben", pushes.browser())
    slow_note = await svc.send("ana", "Hello")
    await _until(lambda: len(pushes.received) == 0 and slow.script == [])  # ana's push is waiting
    started = time.monotonic()
    await svc.send("ben", "Hello")
    await _until(lambda: len(pushes.accepted()) == 1)
    assert time.monotonic() - started < 1.5  # not after ana's 2 s timeout
    (attempt,) = await _attempts(svc, slow_note["id"], 1)
    assert (attempt.status, attempt.outcome) == (0, "retry")


@pytest.mark.sqlite_file  # reads the lease as the job's due time, as the SQLite store keeps it
async def test_a_push_queued_behind_every_slot_is_leased_for_its_wait_too(
    make_service: MakeService, pushes: PushService
) -> None:
    """Every slot held by a push service that does not answer: the pushes queued behind them are
    leased for that wait as well, so no other process takes them and pushes them a second time
    before they even start."""
    timeout = 5.0
    svc = await _service(make_service, pushes, push_timeout_seconds=timeout)
    users = [f"patient-{i}" for i in range(MAX_IN_FLIGHT + 5)]
    for user in users:
        await _subscribe(svc, user, pushes.browser(HANG))
    resp = await svc.client.post(
        "/v1/notifications",
        json={"notifications": [{"user_id": user, "title": "Result"} for user in users]},
        headers=svc.auth(),
    )
    assert resp.status == 201, await resp.text()
    store = svc.app[STORE]
    started = time.time()

    async def leases() -> list[float]:
        jobs = await store.pending_timers(PUSH_OWNER, PUSH_SEND, after_id=None, limit=1000)
        return sorted(job.due_at.timestamp() for job in jobs)

    while len(held := [at for at in await leases() if at > started + timeout]) < len(users):
        assert time.time() - started < HANG_SECONDS - 0.5, "not every push leased in time"
        await asyncio.sleep(0.05)
    # The first MAX_IN_FLIGHT start at once; the five behind them wait up to one timeout more.
    first, queued = held[:MAX_IN_FLIGHT], held[MAX_IN_FLIGHT:]
    assert min(queued) - max(first) >= timeout - 1.0
    # Every push answered (the service holds each HANG_SECONDS) before the app stops: nothing is
    # left in flight for the teardown.
    await _until(lambda: len(pushes.received) >= len(users), timeout=3 * HANG_SECONDS + 10)
    await asyncio.sleep(1.0)


# -- the user's preferences, and critical results' escalation ---------------------------------------


async def test_a_user_who_switched_push_off_for_a_type_or_is_in_quiet_hours_gets_only_critical(
    make_service: MakeService, pushes: PushService
) -> None:
    svc = await _service(make_service, pushes, critical_categories=("sepsis_alert",))
    store = svc.app[STORE]
    await _subscribe(svc, "ana", pushes.browser())
    await _subscribe(svc, "ben", pushes.browser())
    await store.put_preferences("ana", Preferences(channels={"appointment_reminder": {"push": False}}))
    # ben is always in quiet hours (a span of 23 h 59 min; the one minute outside is waited out).
    await store.put_preferences("ben", Preferences(time_zone="Asia/Tokyo", quiet_hours=(0, 1439)))
    tokyo = datetime.now(ZoneInfo("Asia/Tokyo"))
    if tokyo.hour == 23 and tokyo.minute == 59:
        await asyncio.sleep(61 - tokyo.second)
    skipped = [
        await svc.send("ana", "Appointment", type="appointment_reminder"),
        await svc.send("ben", "Lab", type="lab_result_ready"),
    ]
    sent = [
        await svc.send("ana", "Lab", type="lab_result_ready"),
        await svc.send("ben", "Critical lab", type="lab_result_ready", priority="critical"),
        await svc.send("ben", "Sepsis", type="sepsis_alert"),
    ]
    await _until(lambda: len(pushes.accepted()) == len(sent))
    await asyncio.sleep(0.5)
    pushed = {r.payload["id"] for r in pushes.received}
    assert pushed == {n["id"] for n in sent}
    assert not pushed & {n["id"] for n in skipped}


async def test_an_escalation_step_on_push_pushes_the_copy_even_if_it_was_shown(
    make_service: MakeService, pushes: PushService
) -> None:
    clock = ManualClock()
    policy = Policy("critical-lab", (), ("critical",), (Step(60, "same", ("push",)),))
    svc = await _service(make_service, pushes, clock=clock, escalation_policies=(policy,))
    await _subscribe(svc, "dr-1", pushes.browser())
    ws = await svc.connect("dr-1", v1=True, since=0)
    await ws.receive_json(timeout=5)  # welcome
    resp = await svc.client.post(
        "/v1/notifications",
        json={"user_id": "dr-1", "title": "Potassium 6.9", "message": "", "priority": "critical"},
        headers=svc.auth(),
    )
    assert resp.status == 201, await resp.text()
    note = (await resp.json())["notification"]
    # The copy is shown and acknowledged as delivered: no ordinary push follows.
    while (await ws.receive_json(timeout=5)).get("id") != note["id"]:
        pass
    await ws.send_json({"type": "ack", "ids": [note["id"]]})
    await asyncio.sleep(1.5)
    assert pushes.received == []
    # Nobody acknowledged the item as a person: the step a minute later pushes it.
    clock.advance(60)
    await _until(lambda: len(pushes.accepted()) == 1)
    assert pushes.received[0].payload == {"id": note["id"], "title": GENERIC}
    await ws.close()
