"""`/metrics`: what it counts after real sends, deliveries, acknowledgements and reads, parsed with
prometheus-client's own parser; who may scrape it; and that it never names a patient."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from diagnoxix.clock import ManualClock
from diagnoxix.config import Settings
from diagnoxix.edge.clients import Forwarding
from diagnoxix.models import format_timestamp
from diagnoxix.ops.metrics import ScrapeAccess

from .conftest import Service

Scrape = dict[str, dict[tuple[tuple[str, str], ...], float]]
TOKEN = "metrics-token-" + "m" * 40


async def scrape(service: Service, **headers: str) -> Scrape:
    resp = await service.client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await resp.text())


def parse(text: str) -> Scrape:
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def receive_until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=3)
        if frame["type"] == kind:
            return frame


async def test_sends_deliveries_acks_and_reads_are_counted_by_type_and_priority(service: Service) -> None:
    before = await scrape(service)
    plain = await service.connect("patient-plain")
    v1 = await service.connect("patient-v1", v1=True)
    await v1.send_json({"type": "hello"})
    await receive_until(v1, "welcome")

    lab = await service.send("patient-v1", "Lab result", type="lab_result_ready", priority="high")
    appt = await service.send("patient-v1", "Appointment", type="appointment_confirmed")
    await service.send("patient-plain", "Appointment", type="appointment_confirmed")
    await service.send("patient-offline", "Appointment", type="appointment_confirmed")
    assert (await plain.receive_json(timeout=3))["type"] == "appointment_confirmed"
    got = [await receive_until(v1, "lab_result_ready"), await receive_until(v1, "appointment_confirmed")]
    await v1.send_json({"type": "ack", "ids": [f["id"] for f in got]})
    await receive_until(v1, "ack")
    await v1.send_json({"type": "ack", "ids": [lab["id"]]})  # again: nothing new to count
    await receive_until(v1, "ack")
    await v1.send_json({"type": "read", "ids": [lab["id"]]})
    await receive_until(v1, "read")
    await v1.send_json({"type": "read", "ids": [lab["id"]]})  # again: already read
    await receive_until(v1, "read")
    user_auth = {"Authorization": f"Bearer {service.token('patient-v1')}"}
    resp = await service.client.post("/v1/users/patient-v1/notifications/read-all", headers=user_auth)
    assert resp.status == 200
    assert (await resp.json())["count"] == 1

    after = await scrape(service)
    assert value(after, "diagnoxix_connections") == 2
    assert value(after, "diagnoxix_users_online") == 2

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    normal_appt = {"type": "appointment_confirmed", "priority": "normal"}
    high_lab = {"type": "lab_result_ready", "priority": "high"}
    assert grew("diagnoxix_notifications_stored_total", **normal_appt) == 3
    assert grew("diagnoxix_notifications_stored_total", **high_lab) == 1
    assert grew("diagnoxix_notifications_sent_total", **normal_appt) == 2  # the offline one waits
    assert grew("diagnoxix_notifications_sent_total", **high_lab) == 1
    assert grew("diagnoxix_notifications_acknowledged_total", **high_lab) == 1
    assert grew("diagnoxix_notifications_acknowledged_total", **normal_appt) == 1
    assert grew("diagnoxix_notifications_read_total", **high_lab) == 1
    assert grew("diagnoxix_notifications_read_total", **normal_appt) == 1
    assert grew("diagnoxix_delivery_latency_seconds_count") == 3
    assert value(after, "diagnoxix_delivery_latency_seconds_bucket", le="+Inf") == value(
        after, "diagnoxix_delivery_latency_seconds_count"
    )
    assert grew("diagnoxix_store_commits_total") >= 1
    assert value(after, "diagnoxix_store_commit_failures_total") == 0
    assert value(after, "diagnoxix_store_last_seq") >= appt["seq"]
    assert grew("diagnoxix_store_batch_writes_count") == grew("diagnoxix_store_commits_total")
    # The process's own figures come from prometheus-client's collectors.
    assert value(after, "process_resident_memory_bytes") > 0

    await plain.close()
    await v1.close()
    for _ in range(100):
        closes = await scrape(service)
        if value(closes, "diagnoxix_websocket_closes_total", code="1000") == 2:
            break
        await asyncio.sleep(0.02)
    assert value(closes, "diagnoxix_websocket_closes_total", code="1000") == 2
    assert value(closes, "diagnoxix_connections") == 0


async def test_a_reconnecting_client_s_replay_is_counted(service: Service) -> None:
    await service.send("patient-away", "One")
    await service.send("patient-away", "Two")
    ws = await service.connect("patient-away")
    for _ in range(2):
        await ws.receive_json(timeout=3)
    assert value(await scrape(service), "diagnoxix_notifications_replayed_total") == 2
    await ws.close()


async def test_the_scrape_names_no_patient_and_no_text(service: Service) -> None:
    await service.send("patient-jane-doe-1984", "Potassium 6.9 mmol/L", message="call the ward now")
    resp = await service.client.get("/metrics")
    body = await resp.text()
    for secret in ("patient-jane-doe-1984", "Potassium", "call the ward", service.api_key):
        assert secret not in body


async def test_invented_types_cannot_grow_the_scrape_without_bound(service: Service) -> None:
    batch = [{"user_id": "u", "title": "t", "message": "m", "type": f"kind-{i}"} for i in range(260)]
    body = {"notifications": batch}
    resp = await service.client.post("/v1/notifications", json=body, headers=service.auth())
    assert resp.status == 201, await resp.text()
    stored = (await scrape(service))["diagnoxix_notifications_stored_total"]
    assert len(stored) <= 201
    assert sum(stored.values()) == 260
    assert value({"s": stored}, "s", type="other", priority="other") == 60


async def test_only_allowed_addresses_or_the_token_may_scrape(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    # Loopback is allowed by default; a request forwarded by a proxy we do not trust is not.
    service = await make_service()
    assert (await service.client.get("/metrics")).status == 200
    forwarded = await service.client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert forwarded.status == 403
    assert (await forwarded.json())["error"]["code"] == "forbidden"

    closed = await make_service(metrics_allowed_networks=(), metrics_token=TOKEN)
    refused = await closed.client.get("/metrics")
    assert refused.status == 403
    assert "DIAGNOXIX_METRICS_TOKEN" in (await refused.json())["error"]["message"]
    wrong = await closed.client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 54})
    assert wrong.status == 401
    assert (await wrong.json())["error"]["code"] == "invalid_token"
    assert (await closed.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200

    # An API key opens the API, not the metrics.
    assert (await closed.client.get("/metrics", headers=closed.auth())).status == 401

    # Behind a trusted proxy, the forwarded client's address decides.
    proxied = await make_service(trusted_proxies=("127.0.0.1",), metrics_allowed_networks=("10.0.0.0/8",))
    inside = await proxied.client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    outside = await proxied.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert (inside.status, outside.status) == (200, 403)


REPO = Path(__file__).resolve().parent.parent


async def test_the_docs_and_the_grafana_dashboard_name_only_metrics_that_exist(service: Service) -> None:
    await service.send("patient-1")
    resp = await service.client.get("/metrics")
    families = {f.name for f in text_string_to_metric_families(await resp.text())}
    served = {name for name in families if name.startswith("diagnoxix_")}
    doc = (REPO / "docs" / "monitoring.md").read_text(encoding="utf-8")
    documented = {re.sub(r"_total$", "", name) for name in re.findall(r"`(diagnoxix_[a-z_]+)", doc)}
    assert served <= documented, f"undocumented in docs/monitoring.md: {sorted(served - documented)}"
    assert documented <= served, f"documented but not served: {sorted(documented - served)}"

    dashboard = json.loads((REPO / "docs" / "grafana" / "diagnoxix-notify.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"\b((?:diagnoxix|process)_[a-z_]+)", expr)
    }
    assert queried <= families, f"the dashboard queries metrics nobody serves: {sorted(queried - families)}"


def test_an_ipv4_client_seen_through_a_dual_stack_listener_is_matched_as_ipv4() -> None:
    access = ScrapeAccess(Settings(), Forwarding(()))

    def from_peer(address: str) -> web.Request:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            (address, 40000) if name == "peername" else default
        )
        return make_mocked_request("GET", "/metrics", transport=transport)

    assert access.address_allowed(from_peer("::ffff:127.0.0.1"))
    assert access.address_allowed(from_peer("::1"))
    assert not access.address_allowed(from_peer("::ffff:10.0.0.7"))


async def test_scheduled_sends_are_counted_by_outcome(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    clock = ManualClock()
    service = await make_service(clock=clock)
    item = {
        "user_id": "patient-7",
        "title": "Appointment tomorrow",
        "message": "9:00, ward B",
        "deliver_at": format_timestamp(clock.now() + timedelta(seconds=60)),
    }
    resp = await service.client.post("/v1/notifications", json=item, headers=service.auth())
    assert resp.status == 202, await resp.text()
    assert (
        value(await scrape(service), "diagnoxix_timer_jobs_total", kind="scheduled_send", outcome="ran") == 0
    )
    clock.advance(61)
    for _ in range(200):
        after = await scrape(service)
        if value(after, "diagnoxix_timer_jobs_total", kind="scheduled_send", outcome="ran") == 1:
            break
        await asyncio.sleep(0.02)
    assert value(after, "diagnoxix_timer_jobs_total", kind="scheduled_send", outcome="ran") == 1
    assert value(after, "diagnoxix_notifications_stored_total", type="notification", priority="normal") == 1
