"""Who is connected, for the caps, the presence API and the dashboard: across every process.

With one process the hub knows (`LocalPresence`). With several, each process's hub knows its
own connections and Redis holds every process's share (`redis_presence.RedisPresence`): a cap
or a count then covers the user's connections in every process.
"""

from __future__ import annotations

from typing import Protocol

from diagnoxix.delivery.hub import Hub

# (user id, open connections, online since as a Unix time)
OnlineUser = tuple[str, int, float]


class Presence(Protocol):
    async def user(self, user_id: str) -> tuple[int, float | None]:
        """(open connections, online since) of one user, in every process."""

    async def online_users(self) -> list[OnlineUser]:
        """Everyone online, longest online first."""

    async def totals(self) -> tuple[int, int]:
        """(open connections, users online), in every process."""


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


def merge_online(shares: list[dict[str, tuple[int, float]]]) -> list[OnlineUser]:
    """Processes' shares (user -> (connections, since)) as one list, longest online first."""
    merged: dict[str, tuple[int, float]] = {}
    for share in shares:
        for user, (count, since) in share.items():
            had = merged.get(user)
            merged[user] = (count, since) if had is None else (had[0] + count, min(had[1], since))
    rows = [(user, count, since) for user, (count, since) in merged.items()]
    return sorted(rows, key=lambda row: (row[2], row[0]))
