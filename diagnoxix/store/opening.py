"""`open_store(settings)`: the one place a store is chosen and opened, for the server and the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.store.protocols import Store
from diagnoxix.store.sqlite.store import SqliteStore


@asynccontextmanager
async def open_store(
    settings: Settings, *, serving: bool = False, clock: Clock | None = None
) -> AsyncIterator[Store]:
    """The configured store, open, and closed again on the way out.

    `serving`: this process serves clients from it, and is then the only one that may (its hub
    sees only what its own writer commits). The CLI's short commands share the file instead.
    `clock`: what decides expiry (the system's unless a test moves one by hand).
    """
    store = SqliteStore(
        settings.db_path, synchronous=settings.sqlite_synchronous, exclusive=serving, clock=clock
    )
    await store.open()
    try:
        yield store
    finally:
        await store.close()
