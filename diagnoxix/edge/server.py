"""The HTTP server itself: what it answers and logs when a request never reaches the app.

aiohttp answers a request it cannot parse (a request line or header over 8 KiB, a malformed
message) with a plain-text 400 that quotes the first 100 bytes of the offending line, and logs it
at error level with a traceback that quotes them again. When that line is `Authorization: Bearer
dxn_...`, the quote is a whole API key, in the response and in the log. Here such a request gets
the JSON error shape, quoting nothing, and one info line naming the kind of problem; a client
that hangs up mid-request is not an error either.

Used by `serve` (the command line) and by the tests' servers, through `GuardedAppRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from diagnoxix.errors import error_response

log = logging.getLogger("diagnoxix.http")


class GuardedRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, (HttpProcessingError, ConnectionError)):
            # Never the message: it quotes the request. The class says which kind of problem.
            log.info("http.bad_request", extra={"status": status, "problem": type(exc).__name__})
            if request.writer.output_size > 0:
                raise ConnectionError("the response had begun; the connection is closed")
            if isinstance(exc, ConnectionError):
                response = error_response(400, "connection_lost", "the client went away")
            else:
                response = error_response(
                    status,
                    "bad_request",
                    "the request could not be read: a line or header over 8 KiB, or not HTTP/1.1",
                )
            response.force_close()
            return response
        return super().handle_error(request, status, exc, message)


class GuardedServer(web.Server):
    """aiohttp's server, making `GuardedRequestHandler`s for its connections."""

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        # The app's own server (startup has run), rebuilt as a GuardedServer with the same settings.
        made = await super()._make_server()
        return GuardedServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


def serve(
    app: web.Application, *, host: str, port: int, on_ready: Callable[[], None], **runner_options: Any
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (what `web.run_app` does, with
    `GuardedAppRunner`). Raises what start-up raises (a port in use, a store that cannot open)."""
    asyncio.run(_serve(app, host, port, on_ready, runner_options))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    on_ready: Callable[[], None],
    runner_options: dict[str, Any],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = GuardedAppRunner(app, handle_signals=False, **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        on_ready()
        await stop.wait()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
