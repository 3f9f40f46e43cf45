"""`GET /metrics`: the service's figures in Prometheus' text format (prometheus-client).

Nothing here identifies a patient: counts by notification type and priority, connection and queue
gauges, latency and commit histograms, and the process's own figures (memory, CPU, descriptors).
The counters live where the events happen (`delivery.counters`, the store's writer stats) as plain
integers; a scrape builds the families from them, so counting costs the hot paths a dict increment.

Who may scrape: a client address in `DIAGNOXIX_METRICS_ALLOW` (loopback by default), or anyone
with `Authorization: Bearer <DIAGNOXIX_METRICS_TOKEN>`. A request that came through a proxy this
server does not trust (it carries X-Forwarded-For) is never let in by address: behind such a proxy
every client would look like the proxy's loopback address.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from diagnoxix import __version__
from diagnoxix.config import Settings
from diagnoxix.delivery.counters import DeliveryCounters
from diagnoxix.delivery.hub import Hub
from diagnoxix.edge.clients import Forwarding, parse_address, parse_networks
from diagnoxix.errors import ApiError
from diagnoxix.keys import FORWARDING, HUB, LIMITS, SCHEDULER, SETTINGS, STORE, WEBHOOK_CHANNEL
from diagnoxix.models import StoreCounts
from diagnoxix.tally import BucketsSnapshot, LabelCounts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ScrapeAccess:
    """Whether a request may read `/metrics` (see the module's docstring)."""

    def __init__(self, settings: Settings, forwarding: Forwarding) -> None:
        self._networks = parse_networks(settings.metrics_allowed_networks)
        self._token = settings.metrics_token.encode() if settings.metrics_token else None
        self._forwarding = forwarding

    def token_presented(self, request: web.BaseRequest) -> bytes | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        presented = credentials.strip()
        # As the bytes were sent: one that is not UTF-8 is kept by aiohttp as a lone surrogate.
        return (
            presented.encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" and presented else None
        )

    def token_matches(self, presented: bytes) -> bool:
        return self._token is not None and hmac.compare_digest(presented, self._token)

    def address_allowed(self, request: web.BaseRequest) -> bool:
        if not self._networks:
            return False
        forwarding = self._forwarding
        if "X-Forwarded-For" in request.headers and not forwarding.trusts(request.remote):
            return False
        address = parse_address(forwarding.address(request))
        return address is not None and any(address in network for network in self._networks)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape reports, read at one moment."""

    connections: int
    users_online: int
    queued_frames: int
    last_seq: int
    store: StoreCounts
    counters: DeliveryCounters
    # Durable timers' jobs (scheduled sends) by (kind, outcome); empty without a scheduler.
    timer_outcomes: dict[tuple[str, str], int]
    # Webhook delivery attempts by outcome (this process), and dead letters waiting (the store).
    webhook_outcomes: dict[str, int] = field(default_factory=dict)
    webhook_dead_letters: int = 0


def _labelled(
    family: CounterMetricFamily, counts: LabelCounts, *, empty: Iterable[tuple[str, ...]] = ()
) -> CounterMetricFamily:
    seen = False
    for key, value in counts.items():
        family.add_metric([str(part) for part in key] if isinstance(key, tuple) else [str(key)], value)
        seen = True
    if not seen:
        for labels in empty:
            family.add_metric(list(labels), 0)
    return family


def _histogram(name: str, documentation: str, snapshot: BucketsSnapshot | None) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    if snapshot is not None:
        buckets = [
            ("+Inf" if bound == float("inf") else repr(bound), count)
            for bound, count in zip(snapshot.bounds, snapshot.cumulative, strict=True)
        ]
        family.add_metric([], buckets, snapshot.total)
    return family


class _ScrapeCollector(Collector):
    """The service's own families, from one `Snapshot`."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._s = snapshot

    def collect(self) -> Iterator[Metric]:
        s, c = self._s, self._s.counters
        # This process's, as every figure here: with several processes Prometheus holds one series
        # per process (docs/scaling.md says how to add them up).
        yield GaugeMetricFamily(
            "diagnoxix_connections",
            "Open WebSocket and SSE connections to this process.",
            value=s.connections,
        )
        yield GaugeMetricFamily(
            "diagnoxix_users_online",
            "Users with at least one open connection to this process.",
            value=s.users_online,
        )
        yield GaugeMetricFamily(
            "diagnoxix_send_queue_frames",
            "Frames waiting in connections' send queues (slow clients).",
            value=s.queued_frames,
        )
        yield GaugeMetricFamily(
            "diagnoxix_store_last_seq", "Highest notification seq committed.", value=s.last_seq
        )
        per_kind = ("type", "priority")
        yield _labelled(
            CounterMetricFamily(
                "diagnoxix_notifications_stored",
                "Notifications committed to the store by this process.",
                labels=per_kind,
            ),
            c.stored,
        )
        yield _labelled(
            CounterMetricFamily(
                "diagnoxix_notifications_sent",
                "Live notification frames handed to sockets (a broadcast counts once per socket).",
                labels=per_kind,
            ),
            c.sent,
        )
        yield CounterMetricFamily(
            "diagnoxix_notifications_replayed",
            "Notifications sent from the store to (re)connecting clients before they went live.",
            value=c.replayed,
        )
        yield _labelled(
            CounterMetricFamily(
                "diagnoxix_notifications_acknowledged",
                "Notifications acknowledged by v1 clients (first acknowledgement; broadcasts per user).",
                labels=per_kind,
            ),
            c.acknowledged,
        )
        yield _labelled(
            CounterMetricFamily(
                "diagnoxix_notifications_read",
                "Notifications marked read (once each).",
                labels=per_kind,
            ),
            c.read,
        )
        yield _histogram(
            "diagnoxix_delivery_latency_seconds",
            "From a send's commit batch being stamped to its live frame being handed to a socket.",
            c.latency.snapshot(),
        )
        closes = CounterMetricFamily(
            "diagnoxix_websocket_closes", "Closed WebSocket connections by close code.", labels=("code",)
        )
        for code, count in sorted(c.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        yield CounterMetricFamily(
            "diagnoxix_store_commits", "Transactions the store's writer committed.", value=s.store.commits
        )
        yield CounterMetricFamily(
            "diagnoxix_store_commit_failures",
            "Transactions that failed (disk full, I/O error): their writes were refused with 503.",
            value=s.store.commit_failures,
        )
        yield _histogram(
            "diagnoxix_store_batch_writes", "Writes per committed transaction.", s.store.batch_sizes
        )
        yield _histogram(
            "diagnoxix_store_commit_seconds",
            "Seconds from a transaction's first statement to its commit.",
            s.store.commit_seconds,
        )
        jobs = CounterMetricFamily(
            "diagnoxix_timer_jobs",
            "Durable timers' jobs (scheduled sends) run by this process, by kind and outcome.",
            labels=("kind", "outcome"),
        )
        for (kind, outcome), count in sorted(s.timer_outcomes.items()):
            jobs.add_metric([kind, outcome], count)
        yield jobs
        webhooks = CounterMetricFamily(
            "diagnoxix_webhook_attempts",
            "Webhook delivery attempts by this process, by outcome (delivered, retried, dead, dropped).",
            labels=("outcome",),
        )
        for outcome in ("delivered", "retried", "dead", "dropped"):
            webhooks.add_metric([outcome], s.webhook_outcomes.get(outcome, 0))
        yield webhooks
        yield GaugeMetricFamily(
            "diagnoxix_webhook_dead_letters",
            "Webhook deliveries that gave up and wait in the dashboard's dead letters.",
            value=s.webhook_dead_letters,
        )
        info = GaugeMetricFamily("diagnoxix_build_info", "The running version.", labels=("version",))
        info.add_metric([__version__], 1)
        yield info


class ServiceMetrics:
    """The process-wide collectors (made once) and the access rule; one per app."""

    def __init__(self, settings: Settings, forwarding: Forwarding) -> None:
        self.access = ScrapeAccess(settings, forwarding)
        # The process's figures, on a registry of this app's own: never the library's global
        # one (no module-level state here).
        self._process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._process)
        PlatformCollector(registry=self._process)
        GCCollector(registry=self._process)

    def render(self, snapshot: Snapshot) -> bytes:
        service = CollectorRegistry(auto_describe=False)
        service.register(_ScrapeCollector(snapshot))
        # Two expositions with distinct names read as one.
        return generate_latest(self._process) + generate_latest(service)


METRICS = web.AppKey("diagnoxix.metrics", ServiceMetrics)


async def _snapshot(app: web.Application) -> Snapshot:
    hub: Hub = app[HUB]
    store = app[STORE]
    return Snapshot(
        connections=hub.connection_count,
        users_online=hub.user_count,
        queued_frames=hub.queued_frames,
        last_seq=await store.last_seq(),
        store=await store.counts(),
        counters=hub.counters,
        timer_outcomes=dict(app[SCHEDULER].outcomes) if SCHEDULER in app else {},
        webhook_outcomes=dict(app[WEBHOOK_CHANNEL].sender.outcomes) if WEBHOOK_CHANNEL in app else {},
        webhook_dead_letters=await store.count_dead_webhooks(),
    )


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    service_metrics = app[METRICS]
    access = service_metrics.access
    await app[LIMITS].admit(request)
    presented = access.token_presented(request)
    if presented is not None:
        if not access.token_matches(presented):
            await app[LIMITS].failed_credentials(request)
            raise ApiError(401, "invalid_token", "this token does not open /metrics")
    elif not access.address_allowed(request):
        raise ApiError(
            403,
            "forbidden",
            "/metrics answers the addresses in DIAGNOXIX_METRICS_ALLOW, or a request with"
            " Authorization: Bearer <DIAGNOXIX_METRICS_TOKEN>",
        )
    body = service_metrics.render(await _snapshot(app))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def setup_metrics(app: web.Application) -> None:
    app[METRICS] = ServiceMetrics(app[SETTINGS], app[FORWARDING])
    app.router.add_get("/metrics", metrics)
