"""The HTTP server itself: connections before any request, and requests that never reach the app.

Each client address may hold `max_connections_per_address` connections at once (sockets and HTTP
alike; trusted proxies are exempt, their clients are limited by address at the proxy and, for
sockets, at the upgrade); one more is answered 429 and closed before it is read. A connection must
send a whole request within `http_header_timeout_seconds` (aiohttp's keep-alive timeout, which it
also applies to a connection's first request), so slow-header floods (slowloris) let go. A client
that leaves what was written to it unread for `http_write_timeout_seconds` (the transport's buffer
full all that time) is dropped: aiohttp itself would wait for it, the response held, without end.

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
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from diagnoxix.config import Settings
from diagnoxix.edge.clients import Forwarding, parse_networks
from diagnoxix.errors import error_response

log = logging.getLogger("diagnoxix.http")
# Start and stop of the serving process (the command line logs `server.start`).
lifecycle = logging.getLogger("diagnoxix")

# The whole shutdown (handlers' grace, sockets, the app's cleanup: the store's last commit, pushes
# and webhooks in flight) gets this long. A shutdown stuck past it names what it waits for and
# ends the process with STUCK_EXIT_CODE, rather than hold a SIGTERM'd server until its supervisor
# kills it blind. Whatever a sender was told is stored was committed before it was told.
SHUTDOWN_LIMIT_SECONDS = 25.0
STUCK_EXIT_CODE = 70  # EX_SOFTWARE
# At most this many waiting tasks named in the log line, each by its innermost coroutines.
STUCK_TASKS_NAMED = 20
STUCK_CHAIN_NAMED = 4

# Sent to a connection over its address's cap, before anything of it is read. How long to wait is
# a guess: a flood's connections are let go within the header timeout.
_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Retry-After: 15\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)
_TOO_MANY_BODY = (
    b'{"error":{"code":"too_many_connections","message":"this address has too many open'
    b' connections; close some or retry later","details":{}}}'
)


@dataclass(slots=True)
class ConnectionGuard:
    """What one server lets a connection hold: open connections per client address, and how long
    a client may leave what was written to it unread (`write_timeout`, seconds)."""

    forwarding: Forwarding
    per_address: int
    write_timeout: float = 30.0
    open: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionGuard:
        forwarding = Forwarding(parse_networks(settings.trusted_proxies))
        return cls(forwarding, settings.max_connections_per_address, settings.http_write_timeout_seconds)

    def admit(self, address: str) -> bool:
        if self.forwarding.trusts(address):
            return True
        count = self.open.get(address, 0)
        if count >= self.per_address:
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        if self.forwarding.trusts(address):
            return
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)


class GuardedRequestHandler(RequestHandler):
    # Slots like aiohttp's own: an idle patient socket keeps its handler alive.
    __slots__ = ("_admitted_address", "_refused", "_unread_timer", "_wire")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._admitted_address: str | None = None
        self._refused = False
        self._unread_timer: asyncio.TimerHandle | None = None
        # The connection's transport until it is lost: aiohttp forgets its own `transport` when
        # it closes one, while a close waits for buffered bytes to be read, possibly forever.
        self._wire = transport if isinstance(transport, asyncio.Transport) else None
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        manager = self._manager
        guard = manager.guard if isinstance(manager, GuardedServer) else None
        if guard is not None and not guard.admit(address):
            log.info("http.too_many_connections", extra={"limit": guard.per_address})
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_TOO_MANY % (len(_TOO_MANY_BODY), _TOO_MANY_BODY))
            transport.close()
            self._refused = True
            return
        self._admitted_address = address if guard is not None else None
        super().connection_made(transport)

    def pause_writing(self) -> None:
        """The transport's buffer is full: the client is not reading what we wrote. aiohttp waits
        for it without end (a response's bytes and its handler held all the while), so a client
        that does not read enough to resume writing within the write timeout is dropped."""
        super().pause_writing()
        manager = self._manager
        if isinstance(manager, GuardedServer) and self._unread_timer is None:
            self._unread_timer = self._loop.call_later(
                manager.guard.write_timeout, self._drop_unread, manager.guard.write_timeout
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_unread_timer()

    def _stop_unread_timer(self) -> None:
        if self._unread_timer is not None:
            self._unread_timer.cancel()
            self._unread_timer = None

    def _drop_unread(self, seconds: float) -> None:
        self._unread_timer = None
        if self._wire is not None and self.writing_paused:
            log.info("http.unread_dropped", extra={"seconds": seconds})
            # Not close(): that would wait for the buffered bytes the client does not read.
            self._wire.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_unread_timer()
        self._wire = None
        manager = self._manager
        if self._admitted_address is not None and isinstance(manager, GuardedServer):
            manager.guard.release(self._admitted_address)
            self._admitted_address = None
        # A refused connection never began aiohttp's handling, so has nothing of it to end. (Not
        # `self.transport`: aiohttp clears that itself when it force-closes a connection.)
        if not self._refused:
            super().connection_lost(exc)

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

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if isinstance(kw.get("exc_info"), web.RequestPayloadError):
            # A body that does not decode as its Content-Encoding says: answered 400 already, and
            # met again as aiohttp drains what is left of it. The client's fault, not an error.
            log.info("http.bad_body", extra={"problem": "RequestPayloadError"})
            return
        super().log_exception(*args, **kw)


class GuardedServer(web.Server):
    """aiohttp's server, making `GuardedRequestHandler`s for its connections."""

    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    async def _make_server(self) -> web.Server:
        # The app's own server (startup has run), rebuilt as a GuardedServer with the same settings.
        made = await super()._make_server()
        return GuardedServer(
            made.request_handler,
            guard=self._guard,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    on_ready: Callable[[], None],
    reuse_port: bool = False,
    shutdown_limit: float = SHUTDOWN_LIMIT_SECONDS,
    **runner_options: Any,
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (what `web.run_app` does, with
    `GuardedAppRunner`). Raises what start-up raises (a port in use, a store that cannot open).
    `reuse_port`: share the port with the other workers (`edge.workers`). A shutdown that takes
    longer than `shutdown_limit` seconds ends the process (`SHUTDOWN_LIMIT_SECONDS`)."""
    asyncio.run(_serve(app, host, port, on_ready, reuse_port, shutdown_limit, runner_options))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    on_ready: Callable[[], None],
    reuse_port: bool,
    shutdown_limit: float,
    runner_options: dict[str, Any],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def on_signal(signum: int) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    runner = GuardedAppRunner(app, handle_signals=False, **runner_options)
    await runner.setup()
    serving = False
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        serving = True
        on_ready()
        await stop.wait()
        stopping_at = time.monotonic()
        lifecycle.info("server.stopping", extra={"signal": received[0]})
    finally:
        cleanup = asyncio.ensure_future(runner.cleanup())
        with contextlib.suppress(asyncio.CancelledError):
            done, _ = await asyncio.wait([cleanup], timeout=shutdown_limit)
            if not done:
                _stuck(shutdown_limit)
            await cleanup
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if serving:
        # After cleanup: every socket was closed (1001) and the store committed what was queued.
        lifecycle.info(
            "server.stop",
            extra={"signal": received[0], "shutdown_seconds": round(time.monotonic() - stopping_at, 3)},
        )


def _stuck(limit: float) -> None:
    """Name what the shutdown still waits for (each task's name and the innermost coroutine it
    awaits in: code, never data), then end the process: nothing else would end it but a kill."""
    waiting = [_waits_in(task) for task in asyncio.all_tasks() if task is not asyncio.current_task()][
        :STUCK_TASKS_NAMED
    ]
    lifecycle.error("server.shutdown_stuck", extra={"seconds": limit, "waiting": waiting})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(STUCK_EXIT_CODE)


def _waits_in(task: asyncio.Task[Any]) -> str:
    """`name: outer > ... > inner (file:line)`: the innermost coroutines the task awaits in, and
    where the innermost one outside asyncio itself stands."""
    chain: list[str] = []
    where = ""
    coro: Any = task.get_coro()
    while coro is not None and (hasattr(coro, "cr_frame") or hasattr(coro, "gi_frame")):
        chain.append(getattr(coro, "__qualname__", type(coro).__name__))
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None and "asyncio" not in frame.f_code.co_filename:
            where = f" ({frame.f_code.co_filename}:{frame.f_lineno})"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return f"{task.get_name()}: {' > '.join(chain[-STUCK_CHAIN_NAMED:])}{where}"
