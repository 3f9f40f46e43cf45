"""The registry of live connections and the fan-out to them.

Publishing never awaits a client. It appends a pre-encoded frame to each recipient connection's
bounded queue (`connection.Connection`) and marks the connection ready; one fan-out pass then
writes each ready connection's queued frames in a single write, as many as fit below its
transport's high-water mark, so each write completes at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from diagnoxix.delivery.broker import Revocation
from diagnoxix.delivery.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_TOKEN_REVOKED,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_WRITE_TIMEOUT_SECONDS,
    Connection,
)
from diagnoxix.delivery.counters import DeliveryCounters
from diagnoxix.delivery.revocations import RevokedTokens
from diagnoxix.delivery.wire import text_frame
from diagnoxix.models import BROADCAST_RECIPIENT, Notification
from diagnoxix.store.protocols import Delivered

log = logging.getLogger("diagnoxix.hub")

# Delivery records are handed to the store in groups: a burst costs a few store writes, not one per
# frame, and a long drain to a slow client still records as it goes.
DELIVERED_FLUSH_SIZE = 1000

# (deliveries of the users' own notifications, of broadcasts): frames written to plain clients,
# which cannot ack, gathered over one fan-out pass and recorded at once.
DeliveredCallback = Callable[[list[Delivered], list[Delivered]], None]
# (user_id, online, since as a Unix time): a user's first connection opened or last one closed.
PresenceListener = Callable[[str, bool, float], None]
# (user_id): one of the user's connections opened or closed (presence across processes).
ConnectionListener = Callable[[str], None]


class Hub:
    """user id -> that user's open connections; the only place frames are fanned out."""

    def __init__(
        self,
        *,
        high_seq: int = 0,
        on_delivered: DeliveredCallback | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT_SECONDS,
        revoked: RevokedTokens | None = None,
    ) -> None:
        # Every connection's limit on queued bytes, and on the time one frame may take to write.
        self.queue_bytes = queue_bytes
        self.write_timeout = write_timeout
        # A tuple per user: most users have one connection, and a one-element tuple is 48 bytes
        # where a set is 216. Rebuilt on connect and disconnect (at most a few per user).
        self._by_user: dict[str, tuple[Connection, ...]] = {}
        # Presence: when each online user's current streak of connections began.
        self._online_since: dict[str, float] = {}
        self._presence_listeners: list[PresenceListener] = []
        self._connection_listeners: list[ConnectionListener] = []
        self._count = 0
        # Highest seq already handed to the fan-out. A connection registered now receives every
        # later notification live, so its replay from the store stops here: no gap, no duplicate.
        self.high_seq = high_seq
        self.tasks: set[asyncio.Task[None]] = set()
        self.published = 0
        # What `/metrics` reports of this process's deliveries.
        self.counters = DeliveryCounters()
        # Connections with frames to write, in the order they became ready; one callback writes
        # them once the current publish is done, so it sees every frame that publish queued.
        self._ready: deque[Connection] = deque()
        self._fan_out_pending = False
        # Frames written to plain clients since the last flush.
        self._on_delivered = on_delivered
        self._delivered_own: list[Delivered] = []
        self._delivered_broadcasts: list[Delivered] = []
        # Set by `close_all`: the server is shutting down and takes no new connections.
        self.closed = False
        # The revoked token ids every token check of this process reads; the hub, as this
        # process's end of the broker, keeps it current.
        self.revoked = revoked if revoked is not None else RevokedTokens()

    def delivered(self, user_id: str, notification_id: str, broadcast: bool) -> None:
        """A frame reached a plain client's socket: record it with the next flush."""
        (self._delivered_broadcasts if broadcast else self._delivered_own).append((notification_id, user_id))
        if len(self._delivered_own) + len(self._delivered_broadcasts) >= DELIVERED_FLUSH_SIZE:
            self.flush_delivered()

    def flush_delivered(self) -> None:
        """Hand what `delivered` gathered to the store: one call per fan-out pass, not per frame."""
        own, broadcasts = self._delivered_own, self._delivered_broadcasts
        if not (own or broadcasts):
            return
        self._delivered_own, self._delivered_broadcasts = [], []
        if self._on_delivered is not None:
            self._on_delivered(own, broadcasts)

    def schedule(self, conn: Connection) -> None:
        """`conn` has frames to write: the fan-out (scheduled if need be) will write them."""
        self._ready.append(conn)
        if not self._fan_out_pending:
            self._fan_out_pending = True
            asyncio.get_running_loop().call_soon(self._fan_out)

    def _fan_out(self) -> None:
        """One pass over every ready connection, like a bare loop over sockets: no task each.

        Each connection writes only what fits its transport without waiting (see
        `Connection.write_ready`), so the pass never waits for any one client.
        """
        ready = self._ready
        try:
            while ready:
                conn = ready.popleft()
                try:
                    conn.write_ready()
                except Exception:  # one connection's failure must not strand the others
                    log.exception("hub.write_failed", extra={"conn_id": conn.id})
                    conn.close_soon(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._fan_out_pending = False
            self.flush_delivered()

    def register(self, conn: Connection) -> int:
        """Add a connection; returns the seq up to which it must replay from the store."""
        conns = (*self._by_user.get(conn.user_id, ()), conn)
        self._by_user[conn.user_id] = conns
        self._count += 1
        if len(conns) == 1:
            self._online_since[conn.user_id] = conn.connected_at
            self._notify_presence(conn.user_id, True, conn.connected_at)
        for listener in self._connection_listeners:
            listener(conn.user_id)
        return self.high_seq

    def unregister(self, conn: Connection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return
        conns = tuple(c for c in conns if c is not conn)
        self._count -= 1
        if conns:
            self._by_user[conn.user_id] = conns
        else:
            del self._by_user[conn.user_id]
            self._online_since.pop(conn.user_id, None)
            self._notify_presence(conn.user_id, False, time.time())
        for listener in self._connection_listeners:
            listener(conn.user_id)

    def add_presence_listener(self, listener: PresenceListener) -> None:
        self._presence_listeners.append(listener)

    def add_connection_listener(self, listener: ConnectionListener) -> None:
        """`listener(user_id)` after each connection of a user is registered or unregistered."""
        self._connection_listeners.append(listener)

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

    def send_control(self, user_id: str, text: str, seq: int | None = None) -> None:
        """A control frame (e.g. a new unread count) to every v1 connection of one user here, or
        of everyone for '*' (a broadcast's correction).

        A correction's frame has a seq of the stream: like a notification's, it raises the
        watermark as it is fanned out, so a connection registered from now on gets it live and
        one registered before replays it (`delivery.resume`), never both, never neither.
        """
        if seq is not None and seq > self.high_seq:
            self.high_seq = seq
        if user_id == BROADCAST_RECIPIENT:
            recipients: Iterator[Connection] | tuple[Connection, ...] = self.iter_connections()
        else:
            recipients = self._by_user.get(user_id, ())
        frame = None
        for conn in recipients:
            if conn.v1:
                frame = frame or text_frame(text)
                conn.offer(frame)

    def disconnect(self, user_id: str, code: int, reason: str) -> None:
        """Close every connection of one user here, without awaiting any client."""
        for conn in self._by_user.get(user_id, ()):
            conn.close_soon(code, reason)

    def revoke(self, revocation: Revocation) -> None:
        """Refuse the revoked tokens from now on, then close their connections here (4003).

        The list first: a client reconnecting as soon as its socket closes is refused.
        """
        self.revoked.add(revocation.tokens)
        revoked = {token_id for token_id, _ in revocation.tokens}
        for conn in self._by_user.get(revocation.user_id, ()):
            if revocation.all_devices or conn.token_id in revoked:
                conn.close_soon(CLOSE_TOKEN_REVOKED, "token revoked")

    def publish(self, notifications: Sequence[Notification]) -> None:
        """Fan committed notifications out, in seq order. Synchronous by design: awaits nothing."""
        counters, now = self.counters, time.time()
        for note in notifications:
            if note.seq > self.high_seq:
                self.high_seq = note.seq
            self.published += 1
            if note.is_broadcast:
                frame = text_frame(note.encode_frame())
                for everyone in self._by_user.values():
                    for conn in everyone:
                        if not conn.write_now(frame, note.id, True):
                            conn.offer(frame, note.id, broadcast=True)
                if self._count:
                    counters.fanned_out(note, self._count, note.created_at, now)
            elif recipients := self._by_user.get(note.user_id):
                # Encoded once per notification, and only when its user is connected here.
                frame = text_frame(note.encode_frame())
                for conn in recipients:
                    conn.offer(frame, note.id)
                counters.fanned_out(note, len(recipients), note.created_at, now)

    def wants(self, user_id: str) -> bool:
        return user_id == BROADCAST_RECIPIENT or user_id in self._by_user

    def passed(self, seq: int, count: int) -> None:
        if seq > self.high_seq:
            self.high_seq = seq
        self.published += count

    def connections_of(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def iter_connections(self) -> Iterator[Connection]:
        for conns in list(self._by_user.values()):
            yield from conns

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
        """Close every socket (over a copy of the registry: handlers unregister as we go).

        A socket still being set up (upgraded, not registered yet) sees `closed` when it registers
        and closes itself: otherwise its handler would outlive shutdown, and aiohttp waits up to
        a minute for every handler before the process can stop.
        """
        self.closed = True
        conns = list(self.iter_connections())
        await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
