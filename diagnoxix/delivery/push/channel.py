"""The push channel as the app holds it: the VAPID signer, the sender, the router and the jobs'
handlers, built once at start (`app._push_context`)."""

from __future__ import annotations

from collections.abc import Callable

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.preferences import ChannelPreferences
from diagnoxix.delivery.push.escalations import PushEscalations
from diagnoxix.delivery.push.jobs import PushJobStore, PushRouteJobs, PushSendJobs
from diagnoxix.delivery.push.router import PushRouter
from diagnoxix.delivery.push.sender import PushSender
from diagnoxix.delivery.push.vapid import VapidSigner
from diagnoxix.delivery.timers import Handler
from diagnoxix.store.push_records import PUSH_ROUTE, PUSH_SEND


class PushChannel:
    def __init__(
        self,
        store: PushJobStore,
        clock: Clock,
        settings: Settings,
        vapid_pem: str,
        connected: Callable[[str], int],
    ) -> None:
        self.signer = VapidSigner(vapid_pem, settings.push_contact)
        self.sender = PushSender(
            self.signer, timeout=settings.push_timeout_seconds, allow_loopback=settings.push_allow_loopback
        )
        self.router = PushRouter(store, clock, settings, connected)
        chosen = ChannelPreferences(store, clock, settings.critical_categories)
        self.route_jobs = PushRouteJobs(store, clock, self.router.subscribed, chosen)
        self.escalations = PushEscalations(store, clock)
        self.send_jobs = PushSendJobs(store, clock, self.sender, settings)

    @property
    def public_key(self) -> str:
        return self.signer.public_key

    def handlers(self) -> dict[str, Handler]:
        return {PUSH_ROUTE: self.route_jobs, PUSH_SEND: self.send_jobs}

    async def close(self) -> None:
        await self.send_jobs.close()
        await self.sender.close()
