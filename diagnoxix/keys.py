"""Typed keys for everything the app holds. Built by `app.create_app`, never at import time."""

from __future__ import annotations

from aiohttp import web

from diagnoxix.auth import ApiKeys, TokenIssuer
from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.actions import ActionAnswers
from diagnoxix.delivery.broker import Broker
from diagnoxix.delivery.critical import CriticalService
from diagnoxix.delivery.hub import Hub
from diagnoxix.delivery.presence import Presence
from diagnoxix.delivery.push.channel import PushChannel
from diagnoxix.delivery.revocations import RevokedTokens
from diagnoxix.delivery.service import NotificationService
from diagnoxix.delivery.timers import TimerScheduler
from diagnoxix.delivery.webhook_channel import WebhookChannel
from diagnoxix.delivery.webhooks import Webhooks
from diagnoxix.delivery.wording import TemplateBook
from diagnoxix.edge.clients import Forwarding
from diagnoxix.edge.limits import RequestLimits
from diagnoxix.rules.preferences import TimeZones
from diagnoxix.store.protocols import Store

SETTINGS = web.AppKey("diagnoxix.settings", Settings)
STORE = web.AppKey("diagnoxix.store", Store)
HUB = web.AppKey("diagnoxix.hub", Hub)
BROKER = web.AppKey("diagnoxix.broker", Broker)
# Who is connected, in every process (the hub's own registry with one process).
PRESENCE = web.AppKey("diagnoxix.presence", Presence)
SERVICE = web.AppKey("diagnoxix.service", NotificationService)
TOKENS = web.AppKey("diagnoxix.tokens", TokenIssuer)
API_KEYS = web.AppKey("diagnoxix.api_keys", ApiKeys)
# The revoked token ids of this process (read by every token check, kept current by the hub).
REVOKED = web.AppKey("diagnoxix.revoked", RevokedTokens)
STARTED_AT = web.AppKey("diagnoxix.started_at", float)
CLOCK = web.AppKey("diagnoxix.clock", Clock)
# The IANA time zone names users may choose (read on first use).
TIME_ZONES = web.AppKey("diagnoxix.time_zones", TimeZones)
# Who a request comes from (the peer, or what a trusted proxy forwarded).
FORWARDING = web.AppKey("diagnoxix.forwarding", Forwarding)
LIMITS = web.AppKey("diagnoxix.limits", RequestLimits)
# Durable timers (scheduled sends): woken when a job is added.
SCHEDULER = web.AppKey("diagnoxix.scheduler", TimerScheduler)
# Outgoing webhooks: `app[WEBHOOKS].enqueue(event_type, data)` from any feature; the channel
# (sender, rules) for the dashboard and `/metrics`.
WEBHOOKS = web.AppKey("diagnoxix.webhooks", Webhooks)
WEBHOOK_CHANNEL = web.AppKey("diagnoxix.webhook_channel", WebhookChannel)
# Critical results: items acknowledged by a person, escalated while nobody has.
CRITICAL = web.AppKey("diagnoxix.critical", CriticalService)
# Templates of the standard texts (built-in and staff's), by type and locale.
TEMPLATES = web.AppKey("diagnoxix.templates", TemplateBook)
# Users' answers to notifications' actions, and the listeners that hear of them (the sender's webhook).
ACTIONS = web.AppKey("diagnoxix.actions", ActionAnswers)
# Web Push: the VAPID key, the router (a commit listener) and the outbox's job handlers.
PUSH = web.AppKey("diagnoxix.push", PushChannel)
