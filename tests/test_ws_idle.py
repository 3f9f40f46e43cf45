"""What an idle connection keeps alive, for issue 5's memory target (≤ 1.2x a bare aiohttp socket).

The benchmark measures the bytes; these tests pin down the structure that keeps them low, so a
change that brings back a long-lived middleware frame, handshake leftovers or a second timer per
connection fails here rather than months later in a benchmark run.
"""

from __future__ import annotations

import asyncio
from types import CoroutineType
from typing import Any

import diagnoxix
from diagnoxix.delivery.connection import Connection
from diagnoxix.delivery.hub import Hub
from diagnoxix.keys import HUB

from .conftest import Service

PACKAGE_DIR = diagnoxix.__path__[0]


async def _live_connection(svc: Service, user_id: str) -> Connection:
    """The server side of the user's one connection, once it is live (its token timer armed)."""
    async with asyncio.timeout(3):
        while True:
            hub: Hub = svc.app[HUB]
            conns = [c for c in hub.iter_connections() if c.user_id == user_id]
            if conns and conns[0].timer is not None:
                return conns[0]
            await asyncio.sleep(0.01)


def _handler_chain() -> list[CoroutineType[Any, Any, Any]]:
    """The coroutines the server's task for the WebSocket awaits through, outermost first."""
    for task in asyncio.all_tasks():
        chain: list[CoroutineType[Any, Any, Any]] = []
        coro: Any = task.get_coro()
        while isinstance(coro, CoroutineType):
            chain.append(coro)
            coro = coro.cr_await
        if any(c.cr_code.co_name == "websocket_handler" for c in chain):
            return chain
    raise AssertionError("no task is running the WebSocket handler")


async def test_an_idle_connection_waits_in_the_handler_alone(service: Service) -> None:
    ws = await service.connect("idle-1")
    await _live_connection(service, "idle-1")
    chain = _handler_chain()
    ours = [c.cr_code.co_name for c in chain if c.cr_code.co_filename.startswith(PACKAGE_DIR)]
    # No error middleware around it, no handshake or catch-up helper still pending.
    assert ours == ["websocket_handler"]
    handler = next(c for c in chain if c.cr_code.co_name == "websocket_handler")
    assert handler.cr_frame is not None
    assert "shake" not in handler.cr_frame.f_locals
    await ws.close()


async def test_an_idle_connection_has_one_token_timer(service: Service) -> None:
    plain = await service.connect("idle-2")
    assert (await _live_connection(service, "idle-2")).timer is not None
    await plain.close()
    v1 = await service.connect("idle-3", v1=True, since=0)
    assert (await _live_connection(service, "idle-3")).timer is not None
    await v1.close()
