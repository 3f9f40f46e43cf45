"""What other features send by webhook, signed, ids only, through the durable outbox: an escalation
step naming `webhook` reaches the endpoints subscribed to `critical.escalated` (a paging or SMS
gateway), a person's acknowledgement those subscribed to `critical.acknowledged` (the sender's
record; time driven by a ManualClock), and a user's answer to an action those subscribed to
`notification.action_answered`, naming the API key that sent the notification."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from diagnoxix.clock import ManualClock
from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.keys import API_KEYS, CRITICAL, STORE
from diagnoxix.models import NotificationDraft
from diagnoxix.rules.escalation import Policy, Step
from diagnoxix.rules.webhooks import CRITICAL_ACKNOWLEDGED, CRITICAL_ESCALATED, NOTIFICATION_ACTION_ANSWERED
from diagnoxix.store.critical_records import Acknowledgement

from .conftest import Service
from .webhook_receiver import Receiver

POLICY = Policy("critical-lab", (), ("critical",), (Step(60, "same", ("socket", "webhook")),))


async def test_an_escalation_and_the_acknowledgement_reach_the_subscribed_gateway_signed_ids_only(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock, escalation_policies=(POLICY,), webhook_allow_http_loopback=True)
    receiver = await Receiver(new_webhook_secret()).start()
    bystander = await Receiver(new_webhook_secret()).start()
    try:
        store, critical = svc.app[STORE], svc.app[CRITICAL]
        await store.create_webhook_endpoint(
            receiver.url, receiver.secret, (CRITICAL_ESCALATED, CRITICAL_ACKNOWLEDGED), "pager", "t"
        )
        # An endpoint that took only the notification events hears nothing of critical items.
        await store.create_webhook_endpoint(
            bystander.url, bystander.secret, ("notification.created",), "sms", "t"
        )
        draft = NotificationDraft(
            user_id="dr-1",
            type="lab_critical",
            title="Potassium 6.9",
            message="",
            data={},
            priority="critical",
        )
        item, _ = await critical.open("apikey:test", draft, target="user:dr-1", requires_ack=True)
        clock.advance(60)
        (escalated,) = await receiver.wait_for(1)
        assert escalated.verified
        assert escalated.body is not None
        assert escalated.body["type"] == CRITICAL_ESCALATED
        assert escalated.body["data"] == {
            "critical_id": item.id,
            "step": 1,
            "user_ids": ["dr-1"],
            "type": "lab_critical",
            "priority": "critical",
        }
        await critical.acknowledge(item, Acknowledgement("dr-1", "http"))
        received = await receiver.wait_for(2)
        acknowledged = received[1]
        assert acknowledged.verified
        assert acknowledged.body is not None
        assert acknowledged.body["type"] == CRITICAL_ACKNOWLEDGED
        data = acknowledged.body["data"]
        assert (data["critical_id"], data["acknowledged_by"], data["via"], data["on_behalf"]) == (
            item.id,
            "dr-1",
            "http",
            False,
        )
        assert "Potassium" not in json.dumps([r.body for r in received])
        assert bystander.received == []
    finally:
        await receiver.close()
        await bystander.close()


async def test_an_answer_to_an_action_reaches_the_subscribed_gateway_with_the_sender(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    svc = await make_service(link_hosts=("portal.clinic.example",), webhook_allow_http_loopback=True)
    receiver = await Receiver(new_webhook_secret()).start()
    try:
        await svc.app[STORE].create_webhook_endpoint(
            receiver.url, receiver.secret, (NOTIFICATION_ACTION_ANSWERED,), "backend", "t"
        )
        key_id = (await svc.app[API_KEYS].authenticate(svc.api_key)).id
        sent = await svc.send(
            "patient-1",
            "Appointment tomorrow at 2 PM",
            type="appointment_reminder",
            url="https://portal.clinic.example/appointments/456",
            actions=[{"label": "Confirm", "action": "confirm"}, {"label": "Decline", "action": "decline"}],
        )
        headers = {"Authorization": f"Bearer {svc.token('patient-1')}"}
        for _ in range(2):  # answered twice (a retry): one event
            resp = await svc.client.post(f"/v1/notifications/{sent['id']}/actions/confirm", headers=headers)
            assert resp.status == 200, await resp.text()
        (got,) = await receiver.wait_for(1)
        assert got.verified
        assert got.body is not None
        assert got.body["type"] == NOTIFICATION_ACTION_ANSWERED
        data = got.body["data"]
        assert (data["notification_id"], data["user_id"], data["action"], data["sent_by"]) == (
            sent["id"],
            "patient-1",
            "confirm",
            key_id,
        )
        assert "2 PM" not in json.dumps(got.body)
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1
    finally:
        await receiver.close()
