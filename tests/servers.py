"""The one way tests start the service in-process: the real app, production runner options, a
loopback port. `conftest.make_service`, the dashboard tests and the property tests all use it."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from diagnoxix.app import create_app, runner_options
from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.edge.server import GuardedAppRunner


class _GuardedTestServer(TestServer):
    """Runs the app as `run.py` does (`GuardedAppRunner`: bad requests answered and logged safely)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return GuardedAppRunner(self.app, **kwargs)


async def start_app(
    settings: Settings, *, clock: Clock | None = None, port: int = 0, **options: Any
) -> TestServer:
    """Serve `create_app(settings)` on 127.0.0.1 (`port` 0: a free one). `options` override the
    runner's (e.g. a shorter shutdown grace). Stop it with `await server.close()`."""
    server = _GuardedTestServer(create_app(settings, clock=clock), host="127.0.0.1", port=port or None)
    await server.start_server(**(runner_options(settings) | options))
    return server
