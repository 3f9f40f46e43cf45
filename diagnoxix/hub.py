"""The registry of live connections and the fan-out to them.

Publishing never awaits a client: it appends a pre-encoded frame to each recipient connection's
bounded queue and returns. Each connection drains its own queue in its own short-lived sender task,
so a slow phone delays nobody else; a connection whose queue overflows is closed with 1013 and
resumes from the store when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from aiohttp import web

from .models import Notification

log = logging.getLogger("diagnoxix.hub")

# How long closing a connection may take before its transport is simply dropped: a stalled
# client never reads our close frame.
CLOSE_TIMEOUT_SECONDS = 2.0
# Delivered ids are recorded in groups so a burst costs one store write, not one per frame.
DELIVERED_FLUSH_SIZE = 256

# Close codes (RFC 6455 and the registry) the service uses.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# Application range: the connection's token expired without a refresh. Clients that can get a
# fresh token reconnect with it; 1008 (policy) would tell them reconnecting cannot help.
CLOSE_TOKEN_EXPIRED = 4001

# (user_id, own notification ids, broadcast ids): called for frames written to a plain client,
# which cannot ack.
DeliveredCallback = Callable[[str, Sequence[str], Sequence[str]], None]
# (user_id, online, since as a Unix time): a user's first connection opened or last one closed.
PresenceListener = Callable[[str, bool, float], None]


@dataclass(frozen=True, slots=True)
class _Frame:
    text: str
    seq: int | None
    # Set for a notification to a plain client, whose delivery is recorded when written (a v1
    # client's is recorded when it acknowledges).
    delivered_id: str | None
    broadcast: bool = False


class Connection:
    """One open WebSocket of one user. Only the hub and the socket's handler touch it."""

    __slots__ = (
        "_closing",
        "_limit",
        "_live",
        "_on_delivered",
        "_pending",
        "_sender",
        "_tasks",
        "_ws",
        "connected_at",
        "id",
        "timers",
        "user_id",
        "v1",
    )

    def __init__(
        self,
        conn_id: str,
        user_id: str,
        ws: web.WebSocketResponse,
        *,
        v1: bool,
        queue_limit: int,
        on_delivered: DeliveredCallback,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self.id = conn_id
        self.user_id = user_id
        self.v1 = v1
        self.connected_at = time.time()
        self._ws = ws
        self._limit = queue_limit
        # Allocated on first use: an idle connection should cost as little memory as possible.
        self._pending: deque[_Frame] | None = None
        self._sender: asyncio.Task[None] | None = None
        # Until the handler has replayed the backlog, live frames wait in the queue.
        self._live = False
        self._closing = False
        self._on_delivered = on_delivered
        self._tasks = tasks
        # Token refresh and expiry timers (loop.call_at handles, no task per connection).
        self.timers: list[asyncio.TimerHandle] = []

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        return len(self._pending) if self._pending else 0

    def offer(
        self, text: str, seq: int | None = None, delivered_id: str | None = None, broadcast: bool = False
    ) -> None:
        """Queue a frame for this connection; never blocks. Overflow closes the connection."""
        if self._closing:
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        if len(pending) >= self._limit:
            self.close_soon(CLOSE_TRY_AGAIN_LATER, "send queue full; reconnect to resume")
            return
        pending.append(_Frame(text, seq, None if self.v1 else delivered_id, broadcast))
        if self._live and self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._drain())

    def go_live(self) -> None:
        """The backlog has been replayed: start sending what queued up meanwhile."""
        self._live = True
        if self._pending and self._sender is None and not self._closing:
            self._sender = asyncio.get_running_loop().create_task(self._drain())

    async def send_direct(self, text: str) -> None:
        """For the handler's replay, before the connection goes live (no sender runs then)."""
        assert not self._live
        await self._ws.send_str(text)

    async def _drain(self) -> None:
        own: list[str] = []
        broadcasts: list[str] = []
        try:
            pending = self._pending
            while pending:
                frame = pending.popleft()
                await self._ws.send_str(frame.text)
                if frame.delivered_id is not None:
                    (broadcasts if frame.broadcast else own).append(frame.delivered_id)
                    if len(own) + len(broadcasts) >= DELIVERED_FLUSH_SIZE:
                        self._on_delivered(self.user_id, own, broadcasts)
                        own, broadcasts = [], []
        except (ConnectionError, RuntimeError):
            # The peer went away mid-send; the handler sees the close and unregisters us.
            pass
        finally:
            self._sender = None
            if own or broadcasts:
                self._on_delivered(self.user_id, own, broadcasts)

    def close_soon(self, code: int, reason: str) -> None:
        """Close from outside the handler without awaiting the client (safe inside a fan-out)."""
        if self._closing:
            return
        self._closing = True
        if self._pending:
            self._pending.clear()
        if self._sender is not None:
            self._sender.cancel()
        task = asyncio.get_running_loop().create_task(self.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, code: int, reason: str) -> None:
        self._closing = True
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError, RuntimeError):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._ws.close(code=code, message=reason.encode())

    def stop(self) -> None:
        """The handler is done with this connection: stop sending, cancel its timers."""
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class Hub:
    """user id -> that user's open connections; the only place frames are fanned out."""

    def __init__(self, *, high_seq: int = 0) -> None:
        self._by_user: dict[str, set[Connection]] = {}
        # Presence: when each online user's current streak of connections began.
        self._online_since: dict[str, float] = {}
        self._presence_listeners: list[PresenceListener] = []
        self._count = 0
        # Highest seq already handed to the fan-out. A connection registered now receives every
        # later notification live, so its replay from the store stops here: no gap, no duplicate.
        self.high_seq = high_seq
        self.tasks: set[asyncio.Task[None]] = set()
        self.published = 0

    def register(self, conn: Connection) -> int:
        """Add a connection; returns the seq up to which it must replay from the store."""
        conns = self._by_user.setdefault(conn.user_id, set())
        conns.add(conn)
        self._count += 1
        if len(conns) == 1:
            self._online_since[conn.user_id] = conn.connected_at
            self._notify_presence(conn.user_id, True, conn.connected_at)
        return self.high_seq

    def unregister(self, conn: Connection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        self._count -= 1
        if not conns:
            del self._by_user[conn.user_id]
            self._online_since.pop(conn.user_id, None)
            self._notify_presence(conn.user_id, False, time.time())

    def add_presence_listener(self, listener: PresenceListener) -> None:
        self._presence_listeners.append(listener)

    def _notify_presence(self, user_id: str, online: bool, at: float) -> None:
        for listener in self._presence_listeners:
            try:
                listener(user_id, online, at)
            except Exception:
                log.exception("hub.presence_listener_failed")

    def presence(self, user_id: str) -> tuple[int, float | None]:
        """(open connections, online since) for one user."""
        return len(self._by_user.get(user_id, ())), self._online_since.get(user_id)

    def online_users(self) -> list[tuple[str, int, float]]:
        """(user id, connections, online since) for everyone online, longest online first."""
        rows = [(user, len(conns), self._online_since[user]) for user, conns in self._by_user.items()]
        return sorted(rows, key=lambda row: (row[2], row[0]))

    def send_control(self, user_id: str, text: str) -> None:
        """A control frame (e.g. a new unread count) to every v1 connection of one user."""
        for conn in self._by_user.get(user_id, ()):
            if conn.v1:
                conn.offer(text)

    def publish(self, notifications: Sequence[Notification]) -> None:
        """Fan committed notifications out, in seq order. Synchronous by design: awaits nothing."""
        for note in notifications:
            if note.seq > self.high_seq:
                self.high_seq = note.seq
            self.published += 1
            if note.is_broadcast:
                text = note.encode_frame()
                for everyone in self._by_user.values():
                    for conn in everyone:
                        conn.offer(text, note.seq, note.id, broadcast=True)
            elif recipients := self._by_user.get(note.user_id):
                # Encoded once per notification, and only when its user is connected here.
                text = note.encode_frame()
                for conn in recipients:
                    conn.offer(text, note.seq, note.id)

    def connections_of(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def iter_connections(self) -> Iterator[Connection]:
        for conns in list(self._by_user.values()):
            yield from list(conns)

    @property
    def connection_count(self) -> int:
        return self._count

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    @property
    def queued_frames(self) -> int:
        return sum(c.queued for c in self.iter_connections())

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutdown") -> None:
        """Close every socket (over a copy of the registry: handlers unregister as we go)."""
        conns = list(self.iter_connections())
        await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
