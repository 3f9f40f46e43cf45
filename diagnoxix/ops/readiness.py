"""`GET /readyz`: whether this process should get traffic now; `/healthz` stays liveness.

Ready means a send would be stored: the store takes a small write (`check_writable`) through the
same writer as every notification, so a full disk or a failing volume makes the process unready
while `/healthz` (the database answers a read) still says it is alive. A process that is shutting
down is unready too, so a load balancer stops sending it clients before its sockets close.

Both answers say how the broker is (`in-process`, or Redis `up` or `down`), never where it is.
A Redis that is down does not make the process unready: sends are still stored and clients
still resume from the store; only live fan-out between processes waits for Redis, and taking
every process out of the load balancer would turn that into a whole outage.

Probes are coalesced: concurrent requests share one write, and an answer is reused for
`PROBE_REUSE_SECONDS`, so polling `/readyz` cannot turn into a write load. A transaction that
failed (any write, a send's included) makes the process unready at once, for at least
`FAILURE_HOLD_SECONDS`, then a probe decides again.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from diagnoxix.errors import ApiError
from diagnoxix.keys import BROKER, HUB, STORE
from diagnoxix.store.protocols import StoreError

PROBE_REUSE_SECONDS = 1.0
# After a transaction failed (a send got 503), the process stays unready this long even if a small
# probe write gets through: on a nearly full disk the probe's one page may fit where a batch does
# not, and a load balancer should not flap between the two.
FAILURE_HOLD_SECONDS = 3.0


class Readiness:
    def __init__(self) -> None:
        self._probe: asyncio.Task[str | None] | None = None
        self._answered_at = 0.0
        # The store's count of failed transactions when last looked at, and when it last grew.
        self._failures_seen = 0
        self._failed_at: float | None = None

    async def problem(self, app: web.Application) -> str | None:
        """None when ready; otherwise why not, in words an operator can act on."""
        if HUB in app and app[HUB].closed:
            return "the server is shutting down"
        now = time.monotonic()
        try:
            failures = (await app[STORE].counts()).commit_failures
        except StoreError as exc:  # a shared database that is gone (PostgreSQL down, restarting)
            return str(exc)
        failed_since = failures != self._failures_seen
        if failed_since:
            self._failures_seen, self._failed_at = failures, now
        if self._failed_at is not None and now - self._failed_at < FAILURE_HOLD_SECONDS:
            return (
                "the store could not commit a write a moment ago"
                " (disk full or failing, the file locked by another program, or the database gone?)"
            )
        probe = self._probe
        # A probe under way is shared; a finished one is reused while its answer is fresh.
        if probe is None or (probe.done() and now - self._answered_at >= PROBE_REUSE_SECONDS):
            probe = self._probe = asyncio.create_task(self._write_probe(app))
        return await asyncio.shield(probe)

    async def _write_probe(self, app: web.Application) -> str | None:
        try:
            await app[STORE].check_writable()
        except StoreError as exc:
            return f"the store cannot take a write now ({exc})"
        finally:
            self._answered_at = time.monotonic()
        return None


READINESS = web.AppKey("diagnoxix.readiness", Readiness)


async def ready(request: web.Request) -> web.Response:
    problem = await request.app[READINESS].problem(request.app)
    broker = request.app[BROKER].state if BROKER in request.app else "in-process"
    if problem is not None:
        raise ApiError(503, "not_ready", problem, {"broker": broker}, headers={"Retry-After": "5"})
    return web.json_response({"status": "ready", "broker": broker})


def setup_readiness(app: web.Application) -> None:
    app[READINESS] = Readiness()
    app.router.add_get("/readyz", ready)
