"""Critical results on the webhook channel: an escalation step naming `webhook` reaches the
endpoints subscribed to `critical.escalated` (a paging or SMS gateway), and a person's
acknowledgement reaches those subscribed to `critical.acknowledged` (the sender's record), signed,
ids only, through the durable outbox; time driven by a ManualClock."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from diagnoxix.clock import ManualClock
from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.keys import CRITICAL, STORE
from diagnoxix.models import NotificationDraft
from diagnoxix.rules.escalation import Policy, Step
from diagnoxix.rules.webhooks import CRITICAL_ACKNOWLEDGED, CRITICAL_ESCALATED
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
