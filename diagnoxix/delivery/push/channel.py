"""The push channel as the app holds it: the VAPID signer, the sender, the router and the jobs'
handlers, built once at start (`app._push_context`)."""

from __future__ import annotations

from collections.abc import Callable

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.delivery.digests import PUSH_DIGEST, Digests
from diagnoxix.delivery.preferences import ChannelPreferences
from diagnoxix.delivery.push.digest import PUSH_DIGEST_SEND, DigestSendJobs, PushDigestJobs
from diagnoxix.delivery.push.escalations import PushEscalations
from diagnoxix.delivery.push.jobs import Online, PushJobStore, PushRouteJobs, PushSendJobs
from diagnoxix.delivery.push.retractions import (
    PUSH_RETRACT,
    PUSH_RETRACT_SEND,
    PushRetractions,
    RetractionSendJobs,
)
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
        online: Online | None = None,
    ) -> None:
        """`connected`: this process's connections of a user; `online`: with several processes,
        who of some users is connected in any of them (`delivery.presence.Presence.online`)."""
        self.signer = VapidSigner(vapid_pem, settings.push_contact)
        self.sender = PushSender(
            self.signer, timeout=settings.push_timeout_seconds, allow_loopback=settings.push_allow_loopback
        )
        self.router = PushRouter(store, clock, settings, connected, shared=online is not None)
        chosen = ChannelPreferences(store, clock, settings.critical_categories)
        digests = Digests(settings.digest_windows, settings.critical_categories)
        delays = {p: d for p, d in settings.push_delays if d is not None}
        self.route_jobs = PushRouteJobs(
            store, clock, self.router.subscribed, chosen, digests, online=online, delays=delays
        )
        self.escalations = PushEscalations(store, clock)
        self.send_jobs = PushSendJobs(store, clock, self.sender, settings)
        # Digests (`delivery.push.digest`) and retractions (`delivery.push.retractions`): their
        # sends go through the same outbox, each in its own handler.
        self.digest_jobs = PushDigestJobs(store, clock)
        self.digest_sends = DigestSendJobs(store, clock, self.sender, settings)
        self.retractions = PushRetractions(store, clock, self.router.subscribed)
        self.retraction_sends = RetractionSendJobs(store, clock, self.sender, settings)

    @property
    def public_key(self) -> str:
        return self.signer.public_key

    def handlers(self) -> dict[str, Handler]:
        return {
            PUSH_ROUTE: self.route_jobs,
            PUSH_SEND: self.send_jobs,
            PUSH_DIGEST: self.digest_jobs,
            PUSH_DIGEST_SEND: self.digest_sends,
            PUSH_RETRACT: self.retractions,
            PUSH_RETRACT_SEND: self.retraction_sends,
        }

    def on_rescheduled(self, wake: Callable[[], None]) -> None:
        """The timers' `wake`, for every sender that reschedules a push and every job queued."""
        for sends in (self.send_jobs, self.digest_sends, self.retraction_sends):
            sends.on_rescheduled = wake
        self.retractions.on_added = wake

    async def close(self) -> None:
        await self.router.close()
        for sends in (self.digest_sends, self.retraction_sends):
            await sends.close()
        await self.send_jobs.close()
        await self.sender.close()
