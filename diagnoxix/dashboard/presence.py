"""The presence feed: who came online or went offline, as the hub reports it, for staff pages.

The hub calls `record` synchronously when a user's first connection opens or last one closes;
each staff socket keeps a cursor and is sent what is new since its last push.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any

from diagnoxix.models import format_timestamp

# Events kept for sockets that fall behind; a page shows the latest few.
FEED_LENGTH = 200


class PresenceFeed:
    def __init__(self) -> None:
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=FEED_LENGTH)
        self._next = 1

    def record(self, user_id: str, online: bool, at: float) -> None:
        event = {
            "user_id": user_id,
            "online": online,
            "at": format_timestamp(datetime.fromtimestamp(at, UTC)),
        }
        self._events.append((self._next, event))
        self._next += 1

    @property
    def cursor(self) -> int:
        """Where a socket opened now starts: only events after this are new to it."""
        return self._next - 1

    def since(self, cursor: int) -> tuple[list[dict[str, Any]], int]:
        """Events after `cursor` (oldest first) and the cursor to use next time."""
        return [event for number, event in self._events if number > cursor], self.cursor
