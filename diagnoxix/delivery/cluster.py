"""Several processes behind one load balancer, through Redis (docs/scaling.md): the broker, the
presence shares, and what a process does when it may have missed events.

It may have missed events when its subscription was lost (Redis down or restarted, a network
failure) or when another process says it lost some of its own (`redis_events.RESYNC`). The store
has every one of them, so a resync makes the process's clients read them from it:

1. the hub's watermark moves up to the store's last seq: a connection registered from now on
   replays up to there, and everything after arrives live;
2. the revoked tokens are read again (a revocation may have been among the lost events), and
   the sockets they opened are closed (4003);
3. if anything committed since the process last knew it had everything (its start, or the
   last resync), every v1 connection (WebSocket or SSE) is closed with 1013, "reconnect with
   since and nothing is lost": the SDKs reconnect at once and resume from their cursor. Plain
   clients stay connected: what they missed stays undelivered in the store and reaches them as
   their offline queue when they next connect;
4. this process's presence share is written whole again (Redis may have lost it).

A restart of Redis usually asks twice (the subscription comes back, and a process that lost
events says so): the second finds nothing committed since the first and closes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from diagnoxix.config import Settings
from diagnoxix.delivery.connection import CLOSE_TOKEN_REVOKED, CLOSE_TRY_AGAIN_LATER
from diagnoxix.delivery.hub import Hub
from diagnoxix.delivery.redis_broker import RedisBroker
from diagnoxix.delivery.redis_link import RedisLink
from diagnoxix.delivery.redis_presence import RedisPresence
from diagnoxix.delivery.revocations import RevokedTokens
from diagnoxix.store.protocols import Store, StoreError

log = logging.getLogger("diagnoxix.broker")

# How long a starting process waits for Redis before it serves without it (and resyncs once
# Redis answers).
START_WAIT_SECONDS = 3.0
RESYNC_REASON = "events may have been missed; reconnect with since to resume"


class Cluster:
    def __init__(self, settings: Settings, store: Store, hub: Hub, revoked: RevokedTokens) -> None:
        self.process_id = uuid.uuid4().hex[:16]
        self.link = RedisLink(settings.broker_url, name=f"diagnoxix-{self.process_id}")
        self.broker = RedisBroker(self.link, settings.broker_prefix)
        self.presence = RedisPresence(self.link, settings.broker_prefix, hub, self.process_id)
        self._store = store
        self._hub = hub
        self._revoked = revoked
        self._resync_task: asyncio.Task[None] | None = None
        self._resync_again = False
        # The store's last seq when this process last knew it had heard every event (at start,
        # then at each resync): connections resume only if something committed since.
        self._complete_upto = 0
        self.broker.on_resync(self._resync_soon)

    async def start(self) -> None:
        self.link.start()
        self.presence.start()
        if await self.broker.start(START_WAIT_SECONDS):
            # Subscribed: what commits from now on arrives live, what committed before is in the
            # store, so connections replay up to here.
            self._complete_upto = await self._store.last_seq()
            self._hub.high_seq = max(self._hub.high_seq, self._complete_upto)

    async def close(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync_task
        await self.presence.close()
        await self.broker.close()
        await self.link.close()

    def _resync_soon(self) -> None:
        if self._resync_task is not None and not self._resync_task.done():
            self._resync_again = True
            return
        self._resync_task = asyncio.create_task(self._resync(), name="diagnoxix-broker-resync")

    async def _resync(self) -> None:
        while True:
            self._resync_again = False
            hub, revoked = self._hub, self._revoked
            try:
                high_seq = await self._store.last_seq()
                revoked.load(await self._store.revoked_tokens())
            except StoreError as exc:
                # Shutting down, or the store is failing: resume everyone, to be safe.
                log.warning("broker.resync_store_failed", extra={"error": type(exc).__name__})
                missed = True
            else:
                missed = high_seq > self._complete_upto
                self._complete_upto = max(self._complete_upto, high_seq)
                hub.high_seq = max(hub.high_seq, high_seq)
            revoked_closed = resumed = 0
            for conn in list(hub.iter_connections()):
                if conn.token_id is not None and revoked.is_revoked(conn.token_id):
                    conn.close_soon(CLOSE_TOKEN_REVOKED, "token revoked")
                    revoked_closed += 1
                elif conn.v1 and missed:
                    conn.close_soon(CLOSE_TRY_AGAIN_LATER, RESYNC_REASON)
                    resumed += 1
            self.presence.rewrite()
            log.info(
                "broker.resync",
                extra={"high_seq": hub.high_seq, "resumed": resumed, "revoked_closed": revoked_closed},
            )
            if not self._resync_again:
                return
