"""Typed keys for everything the app holds. Built by `app.create_app`, never at import time."""

from __future__ import annotations

from aiohttp import web

from .auth import ApiKeys, TokenIssuer
from .broker import Broker
from .config import Settings
from .dashboard.state import DashboardState
from .hub import Hub
from .service import NotificationService
from .store import Store

SETTINGS = web.AppKey("diagnoxix.settings", Settings)
STORE = web.AppKey("diagnoxix.store", Store)
HUB = web.AppKey("diagnoxix.hub", Hub)
BROKER = web.AppKey("diagnoxix.broker", Broker)
SERVICE = web.AppKey("diagnoxix.service", NotificationService)
TOKENS = web.AppKey("diagnoxix.tokens", TokenIssuer)
API_KEYS = web.AppKey("diagnoxix.api_keys", ApiKeys)
STARTED_AT = web.AppKey("diagnoxix.started_at", float)
# The staff dashboard (diagnoxix/dashboard/): sessions, live sockets, the stats sampler.
DASHBOARD = web.AppKey("diagnoxix.dashboard", DashboardState)
