"""The purge job: what has expired is deleted (and overwritten on disk) in the background.

Expired notifications first: reads already skip them, so purging is about not keeping health
information longer than the clinic's retention policy says, not about correctness. Then the
dashboard's bookkeeping, which would otherwise grow with every sign-in: failed sign-ins the
throttle no longer counts, and staff sessions that ended. Each is deleted a slice at a time, so
the single writer is never held for long.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from diagnoxix.store.protocols import NotificationStore, Store, StoreError

log = logging.getLogger("diagnoxix.retention")

# Failed sign-ins are only ever counted over the dashboard's throttle window (15 minutes,
# `dashboard.accounts.LoginThrottle`); an hour leaves room, and a test holds the window below it.
LOGIN_FAILURES_KEPT = timedelta(hours=1)
# A session that expired (8 hours after sign-in) or was signed out authenticates nobody; sign-ins
# and sign-outs are in the audit log. Kept a day for whoever looks at the database after an incident.
STAFF_SESSIONS_KEPT = timedelta(days=1)
# A retry with the same Idempotency-Key after a day is a new request (Stripe keeps 24 h too).
IDEMPOTENCY_KEPT = timedelta(days=1)
# A scheduled send that went out (or was cancelled, or failed) stays listable this long; the audit
# log keeps that it happened.
FINISHED_TIMERS_KEPT = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class BookkeepingPurge:
    login_failures: int
    staff_sessions: int
    idempotency_records: int = 0
    finished_timers: int = 0
    push_attempts: int = 0


async def purge_once(store: NotificationStore) -> int:
    """Purge slice by slice until nothing expired is left; returns how many were deleted."""
    total = 0
    while deleted := await store.purge_expired():
        total += deleted
    return total


async def purge_bookkeeping(store: Store) -> BookkeepingPurge:
    """Delete, slice by slice, the failed sign-ins and staff sessions that are of no more use,
    the Idempotency-Key records past their day, and jobs that finished a month ago."""
    failures = sessions = records = timers = pushes = 0
    while deleted := await store.purge_login_failures(LOGIN_FAILURES_KEPT):
        failures += deleted
    while deleted := await store.purge_staff_sessions(STAFF_SESSIONS_KEPT):
        sessions += deleted
    while deleted := await store.purge_idempotency_records(IDEMPOTENCY_KEPT):
        records += deleted
    while deleted := await store.purge_finished_timers(FINISHED_TIMERS_KEPT):
        timers += deleted
    # What the push services answered (the dashboard's record of pushes) goes with the jobs.
    while deleted := await store.purge_push_attempts(FINISHED_TIMERS_KEPT):
        pushes += deleted
    return BookkeepingPurge(failures, sessions, records, timers, pushes)


async def purge_forever(store: Store, interval: float) -> None:
    """Purge, then sleep `interval` seconds, until cancelled; a failed purge is tried next time."""
    while True:
        try:
            deleted = await purge_once(store)
            if deleted:
                log.info("retention.purged", extra={"count": deleted})
        except StoreError:
            log.warning("retention.purge_failed")
        try:
            staff = await purge_bookkeeping(store)
            if any(
                (
                    staff.login_failures,
                    staff.staff_sessions,
                    staff.idempotency_records,
                    staff.finished_timers,
                    staff.push_attempts,
                )
            ):
                log.info(
                    "retention.bookkeeping_purged",
                    extra={
                        "login_failures": staff.login_failures,
                        "staff_sessions": staff.staff_sessions,
                        "idempotency_records": staff.idempotency_records,
                        "finished_timers": staff.finished_timers,
                        "push_attempts": staff.push_attempts,
                    },
                )
        except StoreError:
            log.warning("retention.bookkeeping_purge_failed")
        await asyncio.sleep(interval)
