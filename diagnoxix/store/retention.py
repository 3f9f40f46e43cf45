"""The purge job: expired notifications are deleted (and overwritten on disk) in the background.

Reads already skip expired rows, so purging is about not keeping health information longer than
the clinic's retention policy says, not about correctness.
"""

from __future__ import annotations

import asyncio
import logging

from diagnoxix.store.protocols import NotificationStore, StoreError

log = logging.getLogger("diagnoxix.retention")


async def purge_once(store: NotificationStore) -> int:
    """Purge slice by slice until nothing expired is left; returns how many were deleted."""
    total = 0
    while deleted := await store.purge_expired():
        total += deleted
    return total


async def purge_forever(store: NotificationStore, interval: float) -> None:
    """Purge, then sleep `interval` seconds, until cancelled; a failed purge is tried next time."""
    while True:
        try:
            deleted = await purge_once(store)
            if deleted:
                log.info("retention.purged", extra={"count": deleted})
        except StoreError:
            log.warning("retention.purge_failed")
        await asyncio.sleep(interval)
