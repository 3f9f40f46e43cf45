"""Who is connected, for the caps, the presence API and the dashboard: across every process.

With one process the hub knows (`LocalPresence`). With several, each process's hub knows its
own connections and Redis holds every process's share (`redis_presence.RedisPresence`): a cap
or a count then covers the user's connections in every process.

Answers never fail: while Redis cannot answer they count this process's connections only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from diagnoxix.delivery.hub import Hub
from diagnoxix.models import Notification

# (user id, open connections, online since as a Unix time)
OnlineUser = tuple[str, int, float]


class Presence(Protocol):
    async def user(self, user_id: str) -> tuple[int, float | None]:
        """(open connections, online since) of one user, in every process."""

    async def online_users(self) -> list[OnlineUser]:
        """Everyone online, longest online first."""

    async def totals(self) -> tuple[int, int]:
        """(open connections, users online), in every process."""

    async def online(self, user_ids: Iterable[str]) -> set[str]:
        """Which of these users have a connection in any process: one question however many
        users (a batch's delivery states, a page of records), never one per user."""


class LocalPresence:
    """This process's hub: all there is with one process."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def user(self, user_id: str) -> tuple[int, float | None]:
        return self._hub.presence(user_id)

    async def online_users(self) -> list[OnlineUser]:
        return self._hub.online_users()

    async def totals(self) -> tuple[int, int]:
        return self._hub.connection_count, self._hub.user_count

    async def online(self, user_ids: Iterable[str]) -> set[str]:
        hub = self._hub
        return {user for user in user_ids if hub.connections_of(user)}


async def online_recipients(presence: Presence, notes: Sequence[Notification]) -> set[str]:
    """The recipients of `notes` whose delivery state depends on being online (not delivered
    yet, not a broadcast) that have a connection in any process (`Notification.delivery_state`)."""
    asked = {note.user_id for note in notes if note.delivered_at is None and not note.is_broadcast}
    return await presence.online(asked) if asked else set()


def merge_online(shares: list[dict[str, tuple[int, float]]]) -> list[OnlineUser]:
    """Processes' shares (user -> (connections, since)) as one list, longest online first."""
    merged: dict[str, tuple[int, float]] = {}
    for share in shares:
        for user, (count, since) in share.items():
            had = merged.get(user)
            merged[user] = (count, since) if had is None else (had[0] + count, min(had[1], since))
    rows = [(user, count, since) for user, (count, since) in merged.items()]
    return sorted(rows, key=lambda row: (row[2], row[0]))
