"""The scheduler of durable timers: sleeps until the next job is due, then runs it, once.

Jobs live in the store (`TimerStore`), so a restart loses none: at start the scheduler runs every
job that came due while the server was down, then sleeps on the service's `Clock` until the next
one (a test's `ManualClock` wakes it on `advance`, without real waiting). Adding a job calls
`wake()`, so one due sooner than the scheduler's sleep is not late.

Exactly once: a handler stores its effect with `store.protocols.timer_claim(job.id)`, which makes
the store mark the job done in the same transaction. A job run again (the process was killed after
the commit and before anything else happened, or two attempts raced) or cancelled meanwhile finds
the claim taken: `IdempotencyConflict`, and nothing is stored twice.

A handler that fails otherwise (the database was busy) is tried again later, with a growing delay,
up to `MAX_ATTEMPTS` times; then the job is `failed` and logged, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from diagnoxix.clock import Clock
from diagnoxix.store.protocols import IdempotencyConflict, StoreClosed, StoreError, TimerStore
from diagnoxix.store.timer_records import Timer

log = logging.getLogger("diagnoxix.timers")

# A job's effect: must store its notifications with `timer_claim(job.id)` (see the module's doc).
Handler = Callable[[Timer], Awaitable[object]]

# Due jobs are read and run this many at a time (concurrently: the store commits them together).
SLICE = 1000
MAX_ATTEMPTS = 10
# The delay before attempt n+1 is min(2**n, RETRY_CAP_SECONDS) seconds.
RETRY_CAP_SECONDS = 300
# After the store failed to answer, the loop tries again this much later (real seconds).
STORE_RETRY_SECONDS = 1.0
# With a store shared by several processes, the longest a due job can wait for a scheduler.
SHARED_RECHECK_SECONDS = 5.0


class Deferred(Exception):
    """Raised by a handler that rescheduled its job itself (`outcome` "retried") or gave up on it
    ("failed"), with its own policy (an outgoing webhook retries for up to a day)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class TimerScheduler:
    """Runs due jobs with the handler registered for their kind. `run()` is the loop's task."""

    def __init__(
        self,
        store: TimerStore,
        clock: Clock,
        handlers: dict[str, Handler],
        *,
        recheck_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        # A store shared with other processes: look again at least this often (seconds of real
        # time), as a job may come due that no `wake()` here announces (another process added it,
        # or took it and died before finishing: its lease ends).
        self._recheck = recheck_seconds
        self._handlers = dict(handlers)
        self._wakeup = asyncio.Event()
        # Jobs this process ran to completion (a claim taken already or a failure not counted).
        self.ran = 0
        # (kind, outcome) -> jobs: ran, already_claimed, retried, failed (for `/metrics`). Kinds are
        # the handlers' own few names, so the labels are bounded.
        self.outcomes: dict[tuple[str, str], int] = {}

    def wake(self) -> None:
        """A job was added: look again at when the next one is due."""
        self._wakeup.set()

    async def run(self) -> None:
        """Forever: run what is due, then sleep until the next job or a `wake()`."""
        while True:
            self._wakeup.clear()
            try:
                await self.run_due()
                next_due = await self._store.next_due_at()
            except StoreClosed:
                return
            except StoreError as exc:
                log.warning("timers.store_unavailable", extra={"error": type(exc).__name__})
                await asyncio.sleep(STORE_RETRY_SECONDS)
                continue
            await self._sleep(next_due)

    async def _sleep(self, next_due: datetime | None) -> None:
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._wakeup.wait())]
        if next_due is not None:
            waits.append(asyncio.ensure_future(self._clock.sleep_until(next_due)))
        if self._recheck is not None:
            waits.append(asyncio.ensure_future(asyncio.sleep(self._recheck)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            for wait in waits:
                with contextlib.suppress(asyncio.CancelledError):
                    await wait

    async def run_due(self) -> int:
        """Run every job due now, a slice at a time; returns how many were tried."""
        ran = 0
        while jobs := await self._store.due_timers(limit=SLICE):
            results = await asyncio.gather(*(self._run_one(job) for job in jobs), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            ran += len(jobs)
        return ran

    async def _run_one(self, job: Timer) -> None:
        handler = self._handlers.get(job.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for jobs of kind {job.kind!r}")
            await handler(job)
        except IdempotencyConflict:
            # Run already (its completion committed with it) or cancelled meanwhile: nothing to do.
            log.info("timers.already_claimed", extra={"timer": job.id, "kind": job.kind})
            self._count(job, "already_claimed")
            return
        except Deferred as deferred:
            self._count(job, deferred.outcome)
            return
        except StoreClosed:
            raise
        except Exception as exc:
            await self._retry(job, exc)
            return
        self.ran += 1
        self._count(job, "ran")
        log.info("timers.ran", extra={"timer": job.id, "kind": job.kind})

    def _count(self, job: Timer, outcome: str) -> None:
        kind = job.kind if job.kind in self._handlers else "unknown"
        self.outcomes[kind, outcome] = self.outcomes.get((kind, outcome), 0) + 1

    async def _retry(self, job: Timer, exc: Exception) -> None:
        attempts = job.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            log.error(
                "timers.failed",
                extra={"timer": job.id, "kind": job.kind, "attempts": attempts, "error": type(exc).__name__},
            )
            await self._store.retry_timer(job.id, None)
            self._count(job, "failed")
            return
        self._count(job, "retried")
        delay = min(2**attempts, RETRY_CAP_SECONDS)
        log.warning(
            "timers.retry",
            extra={"timer": job.id, "kind": job.kind, "attempts": attempts, "error": type(exc).__name__},
        )
        await self._store.retry_timer(job.id, self._clock.now() + timedelta(seconds=delay))
