"""One open WebSocket of one user: its bounded queue, and how its frames reach the socket.

Frames wait in the connection's queue, bounded in count and in bytes: a client that does not
read is closed with 1013 and resumes from the store. The hub's fan-out writes what fits the
socket's transport at once; what does not goes to a sender task of the connection's own, which
waits for that client alone, and drops it if one frame cannot be written in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Protocol

from aiohttp import WSMsgType

from diagnoxix.delivery.wire import payload_of

log = logging.getLogger("diagnoxix.hub")

# How long closing a connection may take before its transport is simply dropped: a stalled
# client never reads our close frame.
CLOSE_TIMEOUT_SECONDS = 2.0
# Defaults of the settings `ws_send_queue_bytes` and `ws_write_timeout_seconds` (see config).
DEFAULT_QUEUE_BYTES = 1024 * 1024
DEFAULT_WRITE_TIMEOUT_SECONDS = 10.0

# Close codes (RFC 6455 and the registry) the service uses.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# Application range: the connection's token expired without a refresh. Clients that can get a
# fresh token reconnect with it; 1008 (policy) would tell them reconnecting cannot help.
CLOSE_TOKEN_EXPIRED = 4001
# Application range: the connection's token (device) was revoked. Reconnecting with the same token
# is refused (401); only a newly minted token can connect.
CLOSE_TOKEN_REVOKED = 4003

# A queued frame: (the whole frame as written to the wire, id to record as delivered once written,
# is a broadcast). A plain tuple: one is built per recipient of every notification.
_Frame = tuple[bytes, str | None, bool]


class WriteSide(Protocol):
    """What the fan-out reads of a socket's HTTP protocol (aiohttp's `request.protocol`)."""

    @property
    def writing_paused(self) -> bool: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...


class Socket(Protocol):
    """What a connection writes through: aiohttp's `WebSocketResponse`, or the SSE fallback's
    stream (`ws.sse_stream.SseSocket`), which writes the same frames as server-sent events."""

    @property
    def closed(self) -> bool: ...

    @property
    def compress(self) -> int | bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Dispatcher(Protocol):
    """What a connection asks of the hub that fans out to it (`hub.Hub`)."""

    # Every connection's limit on queued bytes, and on the time one frame may take to write.
    queue_bytes: int
    write_timeout: float
    # Close tasks started outside a handler, awaited at shutdown.
    tasks: set[asyncio.Task[None]]

    def schedule(self, conn: Connection) -> None:
        """`conn` has frames to write: the fan-out will write them."""

    def delivered(self, user_id: str, notification_id: str, broadcast: bool) -> None:
        """A frame reached a plain client's socket."""

    def flush_delivered(self) -> None: ...


class Connection:
    """One open WebSocket of one user. Only the hub and the socket's handler touch it."""

    __slots__ = (
        "_bytes",
        "_closing",
        "_hub",
        "_limit",
        "_live",
        "_pending",
        "_scheduled",
        "_sender",
        "_side",
        "_ws",
        "closed_with",
        "connected_at",
        "id",
        "timer",
        "token_id",
        "user_id",
        "v1",
    )

    def __init__(
        self,
        conn_id: str,
        user_id: str,
        ws: Socket,
        *,
        v1: bool,
        queue_limit: int,
        hub: Dispatcher,
        write_side: WriteSide | None = None,
        token_id: str | None = None,
    ) -> None:
        self.id = conn_id
        self.user_id = user_id
        # The device (token id) the connection was opened or last refreshed with; None in dev mode.
        # A revocation closes the connections of the revoked devices only.
        self.token_id = token_id
        self.v1 = v1
        self.connected_at = time.time()
        self._ws = ws
        # Without it (not a real socket) every frame goes through the connection's own sender.
        self._side = write_side
        self._limit = queue_limit
        # Allocated on first use: an idle connection should cost as little memory as possible.
        self._pending: deque[_Frame] | None = None
        # Bytes of the frames in `_pending`: bounded by the hub's `queue_bytes` as well as in count,
        # so replies of up to a hundred notifications cannot pile up unread (nothing else may).
        self._bytes = 0
        self._sender: asyncio.Task[None] | None = None
        # In the hub's ready list, waiting for the fan-out task.
        self._scheduled = False
        # Until the handler has replayed the backlog, live frames wait in the queue.
        self._live = False
        self._closing = False
        # The hub itself, not `hub.schedule`: a bound method would be one more object per connection.
        self._hub = hub
        # The token refresh or expiry timer (a loop.call_at handle, no task per connection).
        self.timer: asyncio.TimerHandle | None = None
        # The close code the server chose, if it closed the connection: what the log records,
        # whatever the client echoed (or 1006 once a stalled one is dropped).
        self.closed_with: int | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        return len(self._pending) if self._pending else 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def offer(self, frame: bytes, delivered_id: str | None = None, broadcast: bool = False) -> None:
        """Queue a frame (`wire.text_frame`) for this connection; never blocks. Overflow (in
        frames, or in bytes once something is queued) closes the connection with 1013: the
        client is not reading, and resumes from the store when it reconnects."""
        if self._closing:
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        size = len(frame)
        if len(pending) >= self._limit or (pending and self._bytes + size > self._hub.queue_bytes):
            self.close_soon(CLOSE_TRY_AGAIN_LATER, "send queue full; reconnect to resume")
            return
        self._bytes += size
        pending.append((frame, None if self.v1 else delivered_id, broadcast))
        if self._live and self._sender is None and not self._scheduled:
            self._scheduled = True
            self._hub.schedule(self)

    def write_now(self, frame: bytes, delivered_id: str | None, broadcast: bool) -> bool:
        """Write `frame` at once if nothing is queued before it and it fits the transport's room;
        False leaves it to `offer`. A broadcast reaches 10,000 sockets this way without queueing
        it 10,000 times only for the fan-out to take it out again."""
        if self._pending or self._sender is not None or not self._live or self._closing:
            return False
        side = self._side
        transport = side.transport if side is not None else None
        if transport is None or transport.is_closing() or self._ws.closed or len(frame) > self._room():
            return False
        try:
            transport.write(frame)
        except Exception:  # the fan-out writes it instead, and deals with a broken connection
            return False
        if delivered_id is not None and not self.v1:
            self._hub.delivered(self.user_id, delivered_id, broadcast)
        return True

    def go_live(self) -> None:
        """The backlog has been replayed: start sending what queued up meanwhile."""
        self._live = True
        if self._pending and self._sender is None and not self._scheduled and not self._closing:
            self._scheduled = True
            self._hub.schedule(self)

    async def send_direct(self, text: str) -> None:
        """For the handler's replay, before the connection goes live (no sender runs then)."""
        assert not self._live
        await self._ws.send_str(text)

    def _room(self) -> int:
        """Bytes the fan-out may write to this socket now without aiohttp ever waiting for it.

        aiohttp's writes wait only while the protocol is paused, and asyncio pauses it only once
        the transport's buffer passes its high-water mark: up to that mark a write completes at
        once. 0 (or less): the connection needs a sender of its own.
        """
        side = self._side
        # A compressing socket may compress in an executor (aiohttp does for large frames) and so
        # wait: it always gets a sender of its own.
        if side is None or side.writing_paused or self._ws.compress:
            return 0
        transport = side.transport
        if transport is None:
            return 0
        return transport.get_write_buffer_limits()[1] - transport.get_write_buffer_size()

    def _take_fitting(self, pending: deque[_Frame]) -> tuple[list[_Frame], bytes]:
        """Pop the queued frames that fit the room, with their bytes joined for one write."""
        room = self._room()
        taken: list[_Frame] = []
        while pending and len(pending[0][0]) <= room:
            entry = pending.popleft()
            room -= len(entry[0])
            self._bytes -= len(entry[0])
            taken.append(entry)
        if len(taken) == 1:
            return taken, taken[0][0]
        return taken, b"".join([entry[0] for entry in taken])

    def write_ready(self) -> None:
        """The fan-out's turn: write what fits the transport's room, in one write.

        A patient sent ten notifications in a burst gets them in one send() rather than ten.
        Frames left over (the client is slow) go to a sender task of this connection's own.
        """
        self._scheduled = False
        pending = self._pending
        if self._closing or self._sender is not None or not pending:
            return
        transport = self._side.transport if self._side is not None else None
        if self._ws.closed or (transport is not None and transport.is_closing()):
            # The peer went away; the handler sees the close and unregisters us.
            pending.clear()
            self._bytes = 0
        else:
            taken, wire = self._take_fitting(pending)
            if taken and transport is not None:
                transport.write(wire)
                hub = self._hub
                for _, delivered_id, broadcast in taken:
                    if delivered_id is not None:
                        hub.delivered(self.user_id, delivered_id, broadcast)
        if pending and not self._closing:
            self._sender = asyncio.get_running_loop().create_task(self._drain())
        elif not pending:
            # An empty deque still holds its 64-slot block: drop it until the next frame.
            self._pending = None

    async def _drain(self) -> None:
        """A slow client's own sender: awaits its socket, so nobody else waits for it.

        A frame that cannot be written within the hub's `write_timeout` means the client stopped
        reading (or its machine stopped): the connection is dropped, since not even a close
        frame would reach it, and aiohttp's heartbeat cannot send its ping either.
        """
        hub = self._hub
        try:
            pending = self._pending
            while pending:
                frame, delivered_id, broadcast = pending.popleft()
                self._bytes -= len(frame)
                async with asyncio.timeout(hub.write_timeout):
                    await self._ws.send_frame(payload_of(frame), WSMsgType.TEXT)
                if delivered_id is not None:
                    hub.delivered(self.user_id, delivered_id, broadcast)
        except (ConnectionError, RuntimeError):
            # The peer went away mid-send; the handler sees the close and unregisters us.
            pass
        except TimeoutError:
            log.info("hub.stalled_client_dropped", extra={"user_id": self.user_id, "conn_id": self.id})
            if self.closed_with is None:
                self.closed_with = CLOSE_TRY_AGAIN_LATER
            self._abort()
        finally:
            self._sender = None
            if not self._pending:
                self._pending = None
            hub.flush_delivered()

    def close_soon(self, code: int, reason: str) -> None:
        """Close from outside the handler without awaiting the client (safe inside a fan-out)."""
        if self._closing:
            return
        self._closing = True
        if self._pending:
            self._pending.clear()
        self._bytes = 0
        if self._sender is not None:
            self._sender.cancel()
        task = asyncio.get_running_loop().create_task(self.close(code, reason))
        tasks = self._hub.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def close(self, code: int, reason: str) -> None:
        self._closing = True
        if self.closed_with is None:
            self.closed_with = code
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._ws.close(code=code, message=reason.encode())
        except TimeoutError:
            # A client that stopped reading never takes our close frame, and a plain close waits
            # for the buffered bytes it will never read: drop the connection.
            self._abort()
        except (ConnectionError, RuntimeError):
            pass

    def _abort(self) -> None:
        """Drop the connection at once, buffered bytes and all; the handler then unregisters it."""
        self._closing = True
        transport = self._side.transport if self._side is not None else None
        if transport is not None:
            transport.abort()

    def stop(self) -> None:
        """The handler is done with this connection: stop sending, cancel its timers."""
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
