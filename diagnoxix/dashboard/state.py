"""What the dashboard holds while the server runs; built by its cleanup context in `setup`."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from diagnoxix.dashboard.accounts import LoginThrottle, Passwords
from diagnoxix.dashboard.presence import PresenceFeed
from diagnoxix.dashboard.registry import LiveSockets
from diagnoxix.dashboard.stats import StatsSampler


@dataclass(slots=True)
class DashboardState:
    # Derived from the server secret (see security.derive_key): one key per purpose.
    csrf_key: bytes
    # aiohttp-session's middleware over our encrypted cookie storage; made once the secret is known.
    session_middleware: Middleware
    passwords: Passwords
    sampler: StatsSampler
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    live: LiveSockets = field(default_factory=LiveSockets)
    # Online/offline events from the hub, pushed to staff pages over the live socket.
    presence: PresenceFeed = field(default_factory=PresenceFeed)


# The dashboard's own key: the core never imports the dashboard, so it is not in `diagnoxix.keys`.
DASHBOARD = web.AppKey("diagnoxix.dashboard", DashboardState)
