"""The purge job: expired notifications are deleted (and overwritten on disk) in the background.

Reads already skip expired rows, so purging is about not keeping health information longer than
the clinic's retention policy says, not about correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from diagnoxix.keys import SETTINGS, STORE
from diagnoxix.store.protocols import Store, StoreError
from diagnoxix.store.sqlite.store import PURGE_SLICE

log = logging.getLogger("diagnoxix.retention")


async def purge_once(store: Store) -> int:
    """Purge slice by slice until nothing expired is left; returns how many were deleted."""
    total = 0
    while True:
        deleted = await store.purge_expired()
        total += deleted
        if deleted < PURGE_SLICE:
            return total


async def _purge_forever(store: Store, interval: float) -> None:
    while True:
        try:
            deleted = await purge_once(store)
            if deleted:
                log.info("retention.purged", extra={"count": deleted})
        except StoreError:
            log.warning("retention.purge_failed")
        await asyncio.sleep(interval)


async def retention_context(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(
        _purge_forever(app[STORE], app[SETTINGS].purge_interval_seconds), name="diagnoxix-purge"
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
