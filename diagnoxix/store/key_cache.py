"""API keys a serving process has found recently, so an API request costs no database read.

Every request with an API key looks its key up by id. A point read from SQLite costs 40-60 µs on
the event loop while the writer commits (each commit makes the reader's page cache stale): about
a twelfth of an ordinary send; from PostgreSQL it is a round trip. The rows found are kept here
instead, for `KEY_CACHE_SECONDS` at most, and the secret is still checked against the stored
hash on every request (`auth.ApiKeys`).

A revocation takes effect at once all the same: the cache empties whenever what tells of
revocations (`Revocations`) changes, and it remembers a row only if that did not change while
the row was read, so a revocation committed during the read is never forgotten. What tells of
them is the store's: on SQLite a mark in the serving lock file (`store.sqlite.files`), written
by whoever revokes a key; on PostgreSQL a notification every process listens for
(`store.postgres.key_revocations`). The time limit is a backstop for a revocation that was
committed but never told (the revoking process died in between, or someone changed the table
by hand).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from diagnoxix.models import ApiKey

# The longest a key found is trusted without reading it again.
KEY_CACHE_SECONDS = 5.0
# A clinic has a handful of keys; past this many, the cache starts afresh.
MAX_CACHED_KEYS = 1000

# The key and its stored secret hash, as `KeyStore.find_api_key` returns them.
FoundKey = tuple[ApiKey, str]


class Revocations(Protocol):
    """What tells of revocations: a value that changes with each one (and, while nothing can tell,
    with every call: then nothing remembered is trusted)."""

    def current(self) -> bytes: ...

    def close(self) -> None: ...


class KeyCache:
    """Key id -> (key, secret hash, trusted until), emptied whenever the revocation mark changes."""

    def __init__(self, revocations: Revocations, *, seconds: float = KEY_CACHE_SECONDS) -> None:
        self._revocations = revocations
        self._seconds = seconds
        self._seen = revocations.current()
        # Bumped by `forget`: a revocation this process made, whatever the lock file says.
        self._generation = 0
        self._keys: dict[str, tuple[FoundKey, float]] = {}

    def mark(self) -> tuple[int, bytes]:
        """What the cache knows of revocations now: take it before reading a key, hand it to `put`."""
        seen = self._revocations.current()
        if seen != self._seen:
            self._seen = seen
            self._keys.clear()
        return self._generation, seen

    def get(self, key_id: str) -> FoundKey | None:
        self.mark()
        entry = self._keys.get(key_id)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._keys[key_id]
            return None
        return entry[0]

    async def find(self, key_id: str, read: Callable[[str], Awaitable[FoundKey | None]]) -> FoundKey | None:
        """The key from memory, else as `read` finds it (then remembered, if still current)."""
        found = self.get(key_id)
        if found is None:
            mark = self.mark()
            found = await read(key_id)
            if found is not None:
                self.put(key_id, found, mark)
        return found

    def put(self, key_id: str, found: FoundKey, mark: tuple[int, bytes]) -> None:
        """Remember an active key read after `mark`, unless a revocation came in since."""
        if not found[0].active or self.mark() != mark:
            return
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[key_id] = (found, time.monotonic() + self._seconds)

    def forget(self) -> None:
        """A key was revoked by this process: nothing remembered, nor being read now, is trusted."""
        self._generation += 1
        self._keys.clear()

    def close(self) -> None:
        self._keys.clear()
        self._revocations.close()
