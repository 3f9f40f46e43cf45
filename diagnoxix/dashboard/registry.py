"""The open staff live sockets, by sign-in session, so a logout can close them at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

# Application close code (4000-4999): the session behind this socket ended (logout, expiry).
CLOSE_SESSION_ENDED = 4001
CLOSE_GOING_AWAY = 1001


@dataclass(eq=False, slots=True)
class LiveSocket:
    ws: web.WebSocketResponse
    session_hash: str
    # Set when the session ends; the socket's own handler then closes it.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = CLOSE_SESSION_ENDED


class LiveSockets:
    def __init__(self) -> None:
        self._by_session: dict[str, set[LiveSocket]] = {}

    def add(self, sock: LiveSocket) -> None:
        self._by_session.setdefault(sock.session_hash, set()).add(sock)

    def remove(self, sock: LiveSocket) -> None:
        socks = self._by_session.get(sock.session_hash)
        if socks is not None:
            socks.discard(sock)
            if not socks:
                del self._by_session[sock.session_hash]

    def end_session(self, session_hash: str) -> int:
        """Tell every socket of the session to close; returns how many there were."""
        socks = list(self._by_session.get(session_hash, ()))
        for sock in socks:
            sock.ended.set()
        return len(socks)

    def end_all(self) -> None:
        """Server shutdown: every socket closes with 1001 Going Away."""
        for socks in list(self._by_session.values()):
            for sock in list(socks):
                sock.close_code = CLOSE_GOING_AWAY
                sock.ended.set()

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._by_session.values())
