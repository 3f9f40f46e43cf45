"""`create_app(settings)`: builds the whole service. Importing this module starts nothing.

One cleanup context per resource, in the order a notification flows: the store, the purge job,
then delivery (broker, hub, service), then the durable timers that send through it. The
dashboard adds its own after these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from diagnoxix.api.push import setup_push_routes
from diagnoxix.api.sending import setup_routes
from diagnoxix.auth import ApiKeys, TokenIssuer, generate_secret
from diagnoxix.clock import Clock, SystemClock
from diagnoxix.config import REPO_ROOT, Settings
from diagnoxix.dashboard.setup import setup_dashboard
from diagnoxix.delivery.actions import ActionAnswers
from diagnoxix.delivery.broker import Broker, InProcessBroker
from diagnoxix.delivery.cluster import Cluster
from diagnoxix.delivery.critical import CRITICAL_SEND, CriticalService
from diagnoxix.delivery.hub import Hub
from diagnoxix.delivery.presence import LocalPresence
from diagnoxix.delivery.push.channel import PushChannel
from diagnoxix.delivery.push.router import PUSH_SUBSCRIBED
from diagnoxix.delivery.push.vapid import VAPID_META_KEY, generate_vapid_pem
from diagnoxix.delivery.redis_broker import RedisBroker
from diagnoxix.delivery.revocations import RevokedTokens
from diagnoxix.delivery.scheduled import SCHEDULED_SEND, ScheduledSends
from diagnoxix.delivery.service import NotificationService
from diagnoxix.delivery.timers import SHARED_RECHECK_SECONDS, Handler, TimerScheduler
from diagnoxix.delivery.webhook_channel import WebhookChannel
from diagnoxix.delivery.webhook_events import ActionWebhooks, CriticalWebhooks
from diagnoxix.delivery.wording import TemplateBook
from diagnoxix.edge.clients import Forwarding, access_logger_class, parse_networks
from diagnoxix.edge.headers import EdgeHeaders
from diagnoxix.edge.limits import RequestLimits
from diagnoxix.edge.server import ConnectionGuard
from diagnoxix.errors import error_middleware
from diagnoxix.keys import (
    ACTIONS,
    API_KEYS,
    BROKER,
    CLOCK,
    CRITICAL,
    FORWARDING,
    HUB,
    LIMITS,
    PRESENCE,
    PUSH,
    REVOKED,
    SCHEDULER,
    SERVICE,
    SETTINGS,
    STARTED_AT,
    STORE,
    TEMPLATES,
    TIME_ZONES,
    TOKENS,
    WEBHOOK_CHANNEL,
    WEBHOOKS,
)
from diagnoxix.ops.metrics import setup_metrics
from diagnoxix.ops.readiness import setup_readiness
from diagnoxix.rules.preferences import TimeZones
from diagnoxix.store.opening import open_store
from diagnoxix.store.retention import purge_forever
from diagnoxix.ws.handler import websocket_handler
from diagnoxix.ws.sse import SSE_PATH, sse_handler


async def _store_context(app: web.Application) -> AsyncIterator[None]:
    """The store, its secret and the credential helpers built on it.

    The revoked tokens still alive are loaded once, here: from then on the broker's revocation
    events keep the list current, and no token check reads the database.
    """
    settings = app[SETTINGS]
    async with open_store(settings, serving=True, clock=app[CLOCK]) as store:
        secret = settings.secret_key or await store.get_or_create_meta("secret_key", generate_secret)
        app[STORE] = store
        revoked = RevokedTokens()
        revoked.load(await store.revoked_tokens())
        app[REVOKED] = revoked
        app[TOKENS] = TokenIssuer(
            secret,
            default_ttl=settings.token_ttl_seconds,
            max_ttl=settings.token_max_ttl_seconds,
            revoked=revoked,
        )
        app[API_KEYS] = ApiKeys(store)
        yield


async def _retention_context(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(
        purge_forever(app[STORE], app[SETTINGS].purge_interval_seconds), name="diagnoxix-purge"
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _delivery_context(app: web.Application) -> AsyncIterator[None]:
    """The one path everything a socket shows takes, wired here and nowhere else:

        store commit ──► broker ──► hub of every process ──► each connection's queue ──► socket
        service (unread counts), dashboard (disconnects), revocations ──► broker ──► ...

    The hub records what it wrote to plain clients back in the store.
    """
    store = app[STORE]
    settings = app[SETTINGS]
    hub = Hub(
        high_seq=await store.last_seq(),
        on_delivered=store.record_deliveries,
        queue_bytes=settings.ws_send_queue_bytes,
        write_timeout=settings.ws_write_timeout_seconds,
        revoked=app[REVOKED],
    )
    # One process: everything in-process. Several: Redis carries the events to every process's
    # hub (this one's too), and holds presence and the rate limits' counters (docs/scaling.md).
    cluster = Cluster(settings, store, hub, app[REVOKED]) if settings.broker_url else None
    broker: Broker = cluster.broker if cluster is not None else InProcessBroker()
    broker.subscribe(hub)
    store.add_commit_listener(broker.publish)
    # A store shared by several processes holds its seq lock until the broker has the events.
    store.set_commit_barrier(broker.drain)
    if cluster is not None:
        await cluster.start()
        app[LIMITS].share(settings.broker_url, settings.broker_prefix, lambda: broker.state == "up")
    app[PRESENCE] = cluster.presence if cluster is not None else LocalPresence(hub)
    # What this process stored, acknowledged and read, for `/metrics`.
    store.add_commit_listener(hub.counters.committed)
    store.add_mark_listener(hub.counters.marked)
    app[HUB] = hub
    app[BROKER] = broker
    # Typed notifications are worded from templates (built-in, and staff's from the store).
    templates = TemplateBook(store, settings.default_locale)
    await templates.load()
    app[TEMPLATES] = templates
    service = NotificationService(store, broker, settings, templates=templates)
    # Corrections reach clients from their commit, in seq order with the notifications.
    store.add_correction_listener(service.publish_correction)
    app[SERVICE] = service
    # Answers to notifications' actions: listeners registered here hear of each first answer (the
    # sender's webhook is one).
    app[ACTIONS] = ActionAnswers(store)
    yield
    await hub.close_all()
    if cluster is not None:
        await cluster.close()


async def _push_context(app: web.Application) -> AsyncIterator[None]:
    """Web Push (`delivery.push`): the VAPID key pair (made on first start, kept in the database
    beside the server secret), and the router, which hears of every commit after the hub."""
    store = app[STORE]
    pem = await store.get_or_create_meta(VAPID_META_KEY, generate_vapid_pem)
    # With several processes, a user with no connection here may have one in another: the push
    # router asks every process's presence before pushing at once (`delivery.push.router`).
    online = app[PRESENCE].online if app[SETTINGS].broker_url else None
    push = PushChannel(store, app[CLOCK], app[SETTINGS], pem, app[HUB].connections_of, online)
    push.router.subscribed.update(await store.push_subscribed_users())
    # A registration taken by any process reaches every process's router at once; after Redis
    # may have lost one, the users are read again.
    broker = app[BROKER]
    broker.on_announcement(PUSH_SUBSCRIBED, push.router.subscribed.add)
    if isinstance(broker, RedisBroker):
        broker.on_resync(push.router.reload_soon)
    store.add_commit_listener(push.router.route)
    # A retraction of a pushed notification is pushed too, with the same Topic.
    store.add_correction_listener(push.retractions.corrected)
    app[PUSH] = push
    yield
    await push.close()


async def _timers_context(app: web.Application) -> AsyncIterator[None]:
    """Durable timers (scheduled sends, webhook deliveries and the webhook rules' checks), run by
    the service: due jobs, those that came due while the server was down first, each exactly once
    (`delivery.timers`). The webhook channel starts first: its rules hear every commit."""
    store = app[STORE]
    channel = WebhookChannel(store, app[CLOCK], app[SETTINGS])
    # Critical results: their sends and escalation steps are jobs too; their outside channels are
    # the webhook outbox (`delivery.webhook_events`, with the sender's "acknowledged" event) and
    # push (`delivery.push.escalations`).
    critical = CriticalService(
        store, app[SERVICE], app[BROKER], app[CLOCK], app[SETTINGS].escalation_policies
    )
    app[CRITICAL] = critical
    CriticalWebhooks(channel.webhooks).attach(critical)
    critical.register_channel("push", app[PUSH].escalations)
    ActionWebhooks(channel.webhooks).attach(app[ACTIONS])
    handlers: dict[str, Handler] = {
        SCHEDULED_SEND: ScheduledSends(app[SERVICE], store, critical),
        CRITICAL_SEND: critical,
        **channel.handlers,
    }
    handlers |= app[PUSH].handlers()
    scheduler = TimerScheduler(
        store,
        app[CLOCK],
        handlers,
        # Other processes add jobs too, and one may die holding a job's lease.
        recheck_seconds=SHARED_RECHECK_SECONDS if app[SETTINGS].store_url else None,
    )
    channel.webhooks.wake = scheduler.wake
    critical.wake = scheduler.wake
    # In-process sends (typed senders, the dashboard's form) of critical ones open items too.
    app[SERVICE].tracker = critical.track
    await channel.start()
    app[SCHEDULER] = scheduler
    app[WEBHOOKS] = channel.webhooks
    app[WEBHOOK_CHANNEL] = channel
    app[PUSH].router.on_added = scheduler.wake
    app[PUSH].escalations.on_added = scheduler.wake
    app[PUSH].on_rescheduled(scheduler.wake)
    task = asyncio.create_task(scheduler.run(), name="diagnoxix-timers")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await channel.close()


async def _close_sockets(app: web.Application) -> None:
    # on_shutdown runs before cleanup: sockets get 1001 while the store can still record delivery.
    if HUB in app:
        await app[HUB].close_all()


# How long shutdown waits for requests still being handled once every WebSocket has been closed.
# It bounds a race in aiohttp (3.14.5) too: a connection accepted just before shutdown ignores
# the request that then arrives and waits for one until this runs out (aiohttp's default: 60 s).
SHUTDOWN_GRACE_SECONDS = 10.0


def runner_options(settings: Settings) -> dict[str, Any]:
    """Options for `edge.server.GuardedAppRunner`, whatever runs it (the command line, the tests).

    The access log goes through our logger, which never prints a query string (`?token=`), and
    names the client a trusted proxy forwarded rather than the proxy.
    """
    forwarding = Forwarding(parse_networks(settings.trusted_proxies))
    return {
        "access_log_class": access_logger_class(forwarding),
        "access_log": logging.getLogger("diagnoxix.access"),
        "shutdown_timeout": SHUTDOWN_GRACE_SECONDS,
        "keepalive_timeout": settings.http_header_timeout_seconds,
        "guard": ConnectionGuard.from_settings(settings),
    }


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """`clock`: the time the service reads (the system's unless a test moves one by hand)."""
    edge = EdgeHeaders(settings)
    forwarding = Forwarding(parse_networks(settings.trusted_proxies))
    limits = RequestLimits(settings, forwarding)
    app = web.Application(
        middlewares=[error_middleware, edge.middleware, limits.middleware],
        client_max_size=settings.max_body_bytes,
    )
    app.on_response_prepare.append(edge.on_prepare)
    app.on_response_prepare.append(limits.on_prepare)
    app.on_cleanup.append(lambda _: limits.close())
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[TIME_ZONES] = TimeZones()
    app[FORWARDING] = forwarding
    app[LIMITS] = limits
    app[STARTED_AT] = time.time()
    app.cleanup_ctx.append(_store_context)
    app.cleanup_ctx.append(_retention_context)
    app.cleanup_ctx.append(_delivery_context)
    app.cleanup_ctx.append(_push_context)
    app.cleanup_ctx.append(_timers_context)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/v1/ws/notifications", websocket_handler)
    # The same stream as server-sent events, where a proxy strips the WebSocket upgrade.
    app.router.add_get(SSE_PATH, sse_handler, allow_head=False)
    # The browser SDK and other static assets (served locally: clinics may run offline).
    app.router.add_static("/static/", REPO_ROOT / "static", name="static")
    setup_routes(app)
    setup_push_routes(app)
    setup_metrics(app)
    setup_readiness(app)
    # The staff dashboard under /dashboard/ (and / redirects there); its context starts after ours.
    setup_dashboard(app)
    return app
