"""Request rates per client address, and failed credentials per client address.

A patient's browser makes a few API calls per page; a ward may share one NAT address; a clinic's
backend service is identified by its API key, not its address. So:

- requests to `/v1/` (and WebSocket handshakes) without an API key are limited per client address
  (`http_requests_per_second_per_address`); requests with one are the service's own business;
- requests with a valid API key are limited per key (`api_key_requests_per_second`): a runaway
  backend service slows itself down, not everyone else;
- answers of 401 (a wrong or expired key or token) are counted per client address, and once
  `auth_failures_per_minute_per_address` are spent, that address may present no credentials at all
  until the minute has passed: guessing keys or tokens gets nowhere, and an API key's hash is
  never computed for a flood.

Both answer 429 in the JSON error shape with `Retry-After`. The counters are this process's (the
`limits` library's memory storage); with several processes (`share`, when a broker is
configured) they live in Redis (the library's Redis storage), so a limit holds however a load
balancer spreads the requests. While Redis is down each process counts on its own again: a
limit per process is weaker, but it is still a limit, and no request fails for it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.util import WindowStats
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from diagnoxix.config import Settings
from diagnoxix.edge.clients import Forwarding
from diagnoxix.errors import ApiError
from diagnoxix.redis_client import redis_pool

log = logging.getLogger("diagnoxix.limits")

# The socket endpoint checks its handshake itself (`admit`): a middleware's frame around it would
# live as long as the socket.
_SOCKET_PATH = "/v1/ws/notifications"
_API_KEY_BEARER = "bearer dxn_"
# Addresses remembered with their latest failed credential are swept once this many pile up.
_FAILED_SWEEP_AT = 1024


class RequestLimits:
    def __init__(self, settings: Settings, forwarding: Forwarding) -> None:
        self._forwarding = forwarding
        self._storage = MemoryStorage()
        self._local = MovingWindowRateLimiter(self._storage)
        # Counters in Redis, used while `_shared_up()` says Redis answers (`share`).
        self._shared: MovingWindowRateLimiter | None = None
        self._shared_pool: ConnectionPool | None = None
        self._shared_up: Callable[[], bool] = lambda: False
        per_second = settings.http_requests_per_second_per_address
        self._requests: RateLimitItem | None = RateLimitItemPerSecond(per_second) if per_second else None
        failures = settings.auth_failures_per_minute_per_address
        self._failures: RateLimitItem | None = RateLimitItemPerMinute(failures) if failures else None
        per_key = settings.api_key_requests_per_second
        self._per_key: RateLimitItem | None = RateLimitItemPerSecond(per_key) if per_key else None
        # Address -> when it last failed to authenticate (monotonic). Every request with an API
        # key offers credentials; one from an address that failed nothing within the failures'
        # window cannot be over their limit, so the limiter is asked only for the others.
        self._failed_at: dict[str, float] = {}
        self._sweep_at = _FAILED_SWEEP_AT

    def share(self, url: str, prefix: str, up: Callable[[], bool]) -> None:
        """Count in Redis at `url` (keys under `<prefix>:limits`) from now on, while `up()` says
        Redis answers (the broker's link knows: one warning per outage is the broker's)."""
        pool = redis_pool(url, name="diagnoxix-limits")
        # The pool carries the URL's address and password; the URL given the library names only
        # which of its storages to use (`async+redis`).
        options: dict[str, Any] = {"connection_pool": pool}
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=f"{prefix}:limits",
            wrap_exceptions=True,
            **options,
        )
        self._shared, self._shared_pool, self._shared_up = MovingWindowRateLimiter(storage), pool, up

    def _limiter(self) -> MovingWindowRateLimiter | None:
        """The shared limiter while Redis answers, else None (this process's then)."""
        return self._shared if self._shared is not None and self._shared_up() else None

    async def _hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        if (shared := self._limiter()) is not None:
            try:
                return await shared.hit(item, *identifiers)
            except (StorageError, RedisError, OSError) as exc:
                log.debug("limits.redis_failed", extra={"error": type(exc).__name__})
        return await self._local.hit(item, *identifiers)

    async def _test(self, item: RateLimitItem, *identifiers: str) -> bool:
        if (shared := self._limiter()) is not None:
            try:
                return await shared.test(item, *identifiers)
            except (StorageError, RedisError, OSError) as exc:
                log.debug("limits.redis_failed", extra={"error": type(exc).__name__})
        return await self._local.test(item, *identifiers)

    async def _window(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        if (shared := self._limiter()) is not None:
            try:
                return await shared.get_window_stats(item, *identifiers)
            except (StorageError, RedisError, OSError) as exc:
                log.debug("limits.redis_failed", extra={"error": type(exc).__name__})
        return await self._local.get_window_stats(item, *identifiers)

    async def admit(self, request: web.BaseRequest) -> None:
        """Raise ApiError 429 when this request's address is over a limit."""
        address = self._forwarding.address(request)
        authorization = request.headers.get(hdrs.AUTHORIZATION, "")
        # A key or token in the header, the query (`?token=`) or a socket's `bearer.` subprotocol.
        offers_credentials = (
            bool(authorization)
            or "token=" in request.query_string
            or "bearer." in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")
        )
        failures, requests = self._failures, self._requests
        if (
            failures is not None
            and offers_credentials
            and (self._shared is not None or self._failed_lately(address, failures))
            and not await self._test(failures, "failures", address)
        ):
            raise await self._too_many(failures, "failures", address, "failed credentials")
        if (
            requests is not None
            and authorization[:11].lower() != _API_KEY_BEARER
            and not await self._hit(requests, "requests", address)
        ):
            raise await self._too_many(requests, "requests", address, "requests")

    async def api_key_request(self, key_id: str) -> None:
        """Raise ApiError 429 when this (authenticated) API key is over its request rate."""
        per_key = self._per_key
        if per_key is not None and not await self._hit(per_key, "api-key", key_id):
            raise await self._too_many(per_key, "api-key", key_id, "requests with this API key")

    async def failed_credentials(self, request: web.BaseRequest) -> None:
        if self._failures is not None:
            address = self._forwarding.address(request)
            self._failed_at[address] = time.monotonic()
            if len(self._failed_at) >= self._sweep_at:
                self._sweep(self._failures)
            await self._hit(self._failures, "failures", address)

    def _failed_lately(self, address: str, failures: RateLimitItem) -> bool:
        """Whether `address` failed here within the failures' window (a second more, to be safe).
        Only for this process's own counters: shared ones count other processes' failures too."""
        at = self._failed_at.get(address)
        return at is not None and time.monotonic() - at <= failures.get_expiry() + 1

    def _sweep(self, failures: RateLimitItem) -> None:
        horizon = time.monotonic() - failures.get_expiry() - 1
        self._failed_at = {a: at for a, at in self._failed_at.items() if at > horizon}
        self._sweep_at = max(_FAILED_SWEEP_AT, 2 * len(self._failed_at))

    async def _too_many(self, item: RateLimitItem, kind: str, key: str, what: str) -> ApiError:
        stats = await self._window(item, kind, key)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        where = "" if kind == "api-key" else " from this address"
        return ApiError(
            429,
            "rate_limited",
            f"too many {what}{where}; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )

    @web.middleware
    def middleware(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        # Not a coroutine for what it lets through (see the error middleware).
        path = request.path
        if not path.startswith("/v1/") or path == _SOCKET_PATH:
            return handler(request)
        return self._admitted(request, handler)

    async def _admitted(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        await self.admit(request)
        return await handler(request)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Count every 401 of the API and the socket handshake against its address."""
        if response.status == 401 and request.path.startswith("/v1/"):
            await self.failed_credentials(request)

    async def close(self) -> None:
        """Stop the memory storage's expiry task and close the Redis connections (at app cleanup)."""
        timer = self._storage.timer
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(BaseException):
                await timer
        if self._shared_pool is not None:
            self._shared = None
            with contextlib.suppress(RedisError, OSError):
                await self._shared_pool.aclose()
