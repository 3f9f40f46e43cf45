"""API-key revocations heard from PostgreSQL, for the cache of keys (`store.key_cache`).

A revocation's transaction also runs `pg_notify(CHANNEL, '')`: PostgreSQL tells every session
listening on the database once it commits, and only if it commits. Each process keeps one
session listening (`RevocationListener`, started with the first key lookup, so a command that
never looks keys up never opens it), and counts what it hears: the count is the value the cache
compares before it trusts a row it remembers.

While the session is not listening (not yet connected, lost, PostgreSQL restarting), nothing
can tell of a revocation: `current()` then changes with every call, so the cache trusts nothing
and every lookup reads the database, as it would without a cache. Once the session listens again
the count moves too, for what may have been committed meanwhile. A session that dies silently
(a network that drops packets without a reset) is not noticed at once: the cache's time limit
(`key_cache.KEY_CACHE_SECONDS`) bounds how long a revoked key may still be taken then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from typing import Any

import asyncpg

from diagnoxix.outages import Outage
from diagnoxix.store.postgres.writer import DRIVER_ERRORS

log = logging.getLogger("diagnoxix.store")

CHANNEL = "diagnoxix_key_revoked"
NOTIFY = "SELECT pg_notify('diagnoxix_key_revoked', '')"
CONNECT_TIMEOUT = 10.0
# Between attempts to listen again: from the first, doubling up to the cap.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


class RevocationListener:
    """`key_cache.Revocations` on PostgreSQL's LISTEN/NOTIFY."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._heard = 0
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self.outage = Outage(log, "store.key_revocations", {})

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="diagnoxix-key-revocations")

    @property
    def listening(self) -> bool:
        return self._listening

    def current(self) -> bytes:
        if not self._listening:
            return os.urandom(8)  # nothing can tell: trust nothing remembered
        return self._heard.to_bytes(8, "little")

    def close(self) -> None:
        self._listening = False
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        task = self._task
        self.close()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _notified(self, *_: Any) -> None:
        self._heard += 1

    async def _listen_forever(self) -> None:
        wait = RETRY_FIRST_SECONDS
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(CHANNEL, self._notified)
                # Whatever was revoked while nobody listened: forget what was remembered.
                self._heard += 1
                self._listening = True
                self.outage.recovered()
                wait = RETRY_FIRST_SECONDS
                await lost.wait()
                self.outage.failed(None, what="listening")
            except DRIVER_ERRORS as exc:  # a connect timeout is an OSError (TimeoutError)
                self.outage.failed(exc, what="listening")
            except Exception as exc:  # a driver's surprise must not end listening for good
                log.warning("store.key_revocations_failed", extra={"error": type(exc).__name__})
                self.outage.failed(exc, what="listening")
            finally:
                self._listening = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_SECONDS)


def _set(event: asyncio.Event, _conn: Any) -> None:
    event.set()
