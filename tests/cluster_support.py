"""Several processes in one test: two apps (`start_app`, each on its own SQLite file) sharing one
throwaway redis-server, as two processes behind a load balancer share one Redis.

Each app stands in for a process with its own store here, so seqs are each store's own: a
socket on A gets B's notifications with B's seqs. (In production the processes share one
store, and one seq order.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from diagnoxix.delivery.broker import Broker
from diagnoxix.keys import BROKER, PRESENCE

from .conftest import Service
from .redis_server import RedisServer

MakeService = Callable[..., Awaitable[Service]]


async def pair(make_service: MakeService, redis: RedisServer, **overrides: Any) -> tuple[Service, Service]:
    a = await make_service(broker_url=redis.url, **overrides)
    b = await make_service(broker_url=redis.url, **overrides)
    return a, b


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "") -> None:
    """Poll `check` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


def broker_of(service: Service) -> Broker:
    broker: Broker = service.app[BROKER]
    return broker


async def connections_seen(service: Service, user_id: str) -> int:
    """The user's connections in every process, as `service` counts them."""
    count: int = (await service.app[PRESENCE].user(user_id))[0]
    return count


async def broker_up(*services: Service) -> bool:
    return all(broker_of(s).state == "up" for s in services)


async def welcome(ws: Any) -> dict[str, Any]:
    """Read up to the welcome frame of a v1 socket; returns it (backlog frames before it dropped)."""
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=5)
        if frame.get("type") == "welcome":
            return frame
