"""Redis connections, opened the same way by every part of the service that uses Redis (the
broker and presence in `delivery`, the rate limits in `edge`).

Short timeouts and no retries inside the driver: a caller that cannot reach Redis learns it at
once and does without (live fan-out stops, rate limits fall back to this process's own counts);
the callers retry on their own schedule, with a capped backoff, and log one warning per outage
(`outages.Outage`). Only `redis://`, `rediss://` and `unix://` URLs reach here
(`config_broker.check_broker_url`).
"""

from __future__ import annotations

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Seconds to open a connection, and for one reply (a pipeline of a burst's PUBLISHes included).
CONNECT_TIMEOUT_SECONDS = 1.0
REPLY_TIMEOUT_SECONDS = 2.0


def redis_pool(url: str, *, name: str) -> ConnectionPool:
    """A connection pool for `url`; `name` is the client name Redis shows in `CLIENT LIST`."""
    return ConnectionPool.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=REPLY_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
    )


def redis_client(url: str, *, name: str) -> Redis:
    """A client on its own pool; `await client.aclose()` closes both."""
    return Redis.from_pool(redis_pool(url, name=name))
