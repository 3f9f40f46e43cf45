"""The store contract, durable timers: jobs stored, run once with their claim, cancelled, retried
and purged, and the scheduler over them, on SQLite and PostgreSQL (`store_backends.store`).

The job handlers here do what every handler must: store their notifications with the job's
claim. Processes sharing one PostgreSQL database are in test_store_pg_jobs.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.delivery.timers import MAX_ATTEMPTS, Handler, TimerScheduler
from diagnoxix.models import NotificationDraft
from diagnoxix.store.protocols import IdempotencyClaim, IdempotencyConflict, TimerKeyTaken, timer_claim
from diagnoxix.store.retention import FINISHED_TIMERS_KEPT
from diagnoxix.store.timer_records import NewTimer, Timer

KIND = "test_send"
OWNER = "apikey:0123456789ab"
# Every seq there is: `notifications_between` reads all of a store's own notifications.
ALL_SEQS = 2**62


def job_at(clock: ManualClock, seconds: float, user: str = "ana", key: str | None = None) -> NewTimer:
    payload = {"user_id": user, "content": {"title": "Due"}}
    return NewTimer(KIND, OWNER, clock.now() + timedelta(seconds=seconds), payload, key)


def sender(store: Any) -> Handler:
    """A handler as a real one is written: the job's notification, stored with its claim."""

    async def send(job: Timer) -> None:
        title = job.payload["content"]["title"]
        draft = NotificationDraft(
            user_id=job.payload["user_id"], type="reminder", title=title, message="", data={}
        )
        await store.insert_notifications([draft], timer_claim(job.id))

    return send


async def stored(store: Any) -> int:
    return int((await store.counts()).stored)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(scheduler: TimerScheduler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _state(store: Any, timer_id: str, state: str) -> bool:
    (job,) = await store.get_timers(OWNER, [timer_id])
    return bool(job.state == state)


async def test_a_job_stored_with_its_claim_is_done_in_that_transaction_and_never_again(
    store: Any, store_clock: ManualClock
) -> None:
    (job,) = await store.add_timers([job_at(store_clock, 60)])
    assert job.state == "pending"
    assert job.payload["content"] == {"title": "Due"}
    assert await store.due_timers(limit=10) == []  # not due yet
    store_clock.advance(60)
    (due,) = await store.due_timers(limit=10)
    assert (due.id, due.due_at, due.attempts) == (job.id, job.due_at, 0)  # as stored, its own time
    await sender(store)(due)
    (done,) = await store.get_timers(OWNER, [job.id])
    assert done.state == "done"
    assert done.payload == {"user_id": "ana"}  # no content kept once run
    (note,) = await store.notifications_between(0, ALL_SEQS, limit=10)
    assert done.result == (note.id,)
    assert note.user_id == "ana"
    with pytest.raises(IdempotencyConflict):  # a second attempt (a restart, a race) stores nothing
        await sender(store)(due)
    assert await stored(store) == 1
    assert not await store.cancel_timer(OWNER, job.id)  # run already: too late to cancel
    assert await store.due_timers(limit=10) == []
    assert await store.next_due_at() is None


async def test_due_jobs_come_soonest_first_up_to_the_limit(store: Any, store_clock: ManualClock) -> None:
    jobs = await store.add_timers([job_at(store_clock, s, user=f"u{s}") for s in (30, 10, 20, 40)])
    assert await store.next_due_at() == jobs[1].due_at
    store_clock.advance(35)
    first = await store.due_timers(limit=2)
    assert [j.payload["user_id"] for j in first] == ["u10", "u20"]
    for job in first:
        await sender(store)(job)
    (third,) = await store.due_timers(limit=2)
    assert third.payload["user_id"] == "u30"


async def test_a_cancelled_job_never_runs(store: Any, store_clock: ManualClock) -> None:
    (job,) = await store.add_timers([job_at(store_clock, 60)])
    assert not await store.cancel_timer("apikey:someoneelse", job.id)  # not theirs
    assert await store.cancel_timer(OWNER, job.id)
    assert not await store.cancel_timer(OWNER, job.id)
    (cancelled,) = await store.get_timers(OWNER, [job.id])
    assert cancelled.state == "cancelled"
    assert cancelled.payload == {"user_id": "ana"}
    assert cancelled.finished_at is not None
    with pytest.raises(IdempotencyConflict):  # a run read the job before the cancel committed
        await sender(store)(job)
    assert await stored(store) == 0
    store_clock.advance(120)
    assert await store.due_timers(limit=10) == []


async def test_a_cancel_and_a_run_at_the_same_moment_never_both_win(
    store: Any, store_clock: ManualClock
) -> None:
    jobs = await store.add_timers([job_at(store_clock, 1, user=f"u{i}") for i in range(40)])
    send = sender(store)

    async def run(job: Timer) -> bool:
        try:
            await send(job)
        except IdempotencyConflict:
            return False
        return True

    # Each pair most likely lands in one group-commit transaction: either order, once each.
    results = []
    for i, job in enumerate(jobs):
        pair = [run(job), store.cancel_timer(OWNER, job.id)]
        results.append(await asyncio.gather(*(pair if i % 2 else pair[::-1])))
    sent_count = 0
    for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
        sent, cancelled = result if i % 2 else result[::-1]
        assert sent != cancelled, job.id
        (found,) = await store.get_timers(OWNER, [job.id])
        assert found.state == ("done" if sent else "cancelled")
        assert len(found.result) == (1 if sent else 0)
        sent_count += sent
    assert await stored(store) == sent_count


async def test_a_pending_key_is_unique_per_owner_until_the_job_is_cancelled(
    store: Any, store_clock: ManualClock
) -> None:
    (first,) = await store.add_timers([job_at(store_clock, 60, key="appointment-456-reminder")])
    with pytest.raises(TimerKeyTaken):
        await store.add_timers([job_at(store_clock, 90, key="appointment-456-reminder")])
    other = NewTimer(KIND, "apikey:ba9876543210", store_clock.now(), {}, "appointment-456-reminder")
    await store.add_timers([other])  # another owner's key is theirs
    found = await store.find_timer_by_key(OWNER, KIND, "appointment-456-reminder")
    assert found is not None
    assert found.id == first.id
    assert await store.cancel_timer(OWNER, first.id)
    store_clock.advance(1)
    (again,) = await store.add_timers([job_at(store_clock, 90, key="appointment-456-reminder")])
    found = await store.find_timer_by_key(OWNER, KIND, "appointment-456-reminder")
    assert found is not None
    assert found.id == again.id
    assert await store.cancel_timer(OWNER, again.id)
    # None pending: the latest that had the key.
    found = await store.find_timer_by_key(OWNER, KIND, "appointment-456-reminder")
    assert found is not None
    assert found.id == again.id
    assert await store.find_timer_by_key(OWNER, KIND, "no-such-key") is None


async def test_jobs_added_with_an_idempotency_claim_are_added_once(
    store: Any, store_clock: ManualClock
) -> None:
    claim = IdempotencyClaim("0123456789ab", "req-1", "hash", 201)
    results = await asyncio.gather(
        *(store.add_timers([job_at(store_clock, 60, user=f"u{i}")], claim) for i in range(5)),
        return_exceptions=True,
    )
    added = [r for r in results if isinstance(r, list)]
    assert len(added) == 1, results
    assert all(isinstance(r, IdempotencyConflict) for r in results if not isinstance(r, list))
    pending = await store.pending_timers(OWNER, KIND, after_id=None, limit=10)
    assert [j.id for j in pending] == [added[0][0].id]


async def test_pending_jobs_are_listed_in_pages_soonest_first(store: Any, store_clock: ManualClock) -> None:
    jobs = await store.add_timers([job_at(store_clock, 10 * (5 - i), user=f"u{i}") for i in range(5)])
    other = NewTimer(KIND, "apikey:ba9876543210", store_clock.now(), {}, None)
    await store.add_timers([other])
    page = await store.pending_timers(OWNER, KIND, after_id=None, limit=2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id]
    rest = await store.pending_timers(OWNER, KIND, after_id=page[-1].id, limit=10)
    assert [j.id for j in rest] == [jobs[2].id, jobs[1].id, jobs[0].id]
    assert await store.cancel_timer(OWNER, jobs[2].id)
    assert len(await store.pending_timers(OWNER, KIND, after_id=None, limit=10)) == 4
    # Another owner's jobs are neither listed nor found.
    assert await store.get_timers("apikey:ba9876543210", [jobs[0].id]) == []
    assert [j.id for j in await store.get_timers(OWNER, [jobs[1].id, "nope", jobs[0].id])] == [
        jobs[1].id,
        jobs[0].id,
    ]


async def test_a_job_finished_by_its_outgoing_call_is_done_once(store: Any, store_clock: ManualClock) -> None:
    (job,) = await store.add_timers([job_at(store_clock, 0)])
    assert await store.finish_timer(job.id)
    assert not await store.finish_timer(job.id)
    (done,) = await store.get_timers(OWNER, [job.id])
    assert (done.state, done.payload) == ("done", {"user_id": "ana"})


async def test_the_scheduler_sleeps_until_a_job_is_due_and_wakes_for_a_sooner_one(
    store: Any, store_clock: ManualClock
) -> None:
    clock = store_clock
    scheduler = TimerScheduler(store, clock, {KIND: sender(store)})
    (late,) = await store.add_timers([job_at(clock, 3600, user="late")])

    async def asleep() -> bool:
        return clock.sleepers > 0

    async with running(scheduler):
        await until(asleep)
        (soon,) = await store.add_timers([job_at(clock, 60, user="soon")])
        scheduler.wake()
        clock.advance(59)
        await asyncio.sleep(0.05)
        assert scheduler.ran == 0
        clock.advance(1)
        await until(lambda: _state(store, soon.id, "done"))
        assert await _state(store, late.id, "pending")
        clock.advance(3600)
        await until(lambda: _state(store, late.id, "done"))
    assert scheduler.ran == 2
    assert await stored(store) == 2


async def test_a_failing_job_is_retried_later_then_failed_never_dropped_silently(
    store: Any, store_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock = store_clock

    async def broken(job: Timer) -> None:
        raise RuntimeError("the downstream is unavailable")

    scheduler = TimerScheduler(store, clock, {KIND: broken})
    (job,) = await store.add_timers([job_at(clock, 0)])
    assert await scheduler.run_due() == 1
    (retried,) = await store.get_timers(OWNER, [job.id])
    assert retried.state == "pending"
    assert retried.attempts == 1
    assert retried.due_at == clock.now().replace(
        microsecond=clock.now().microsecond // 1000 * 1000
    ) + timedelta(seconds=2)
    assert await scheduler.run_due() == 0  # not due again yet
    for _ in range(MAX_ATTEMPTS - 1):
        clock.advance(3600)
        assert await scheduler.run_due() == 1
    (failed,) = await store.get_timers(OWNER, [job.id])
    assert failed.state == "failed"
    assert "content" not in failed.payload
    assert failed.attempts == MAX_ATTEMPTS
    assert any(r.message == "timers.failed" for r in caplog.records)
    clock.advance(3600)
    assert await scheduler.run_due() == 0


async def test_finished_jobs_are_purged_a_month_later_in_slices_and_pending_ones_never(
    store: Any, store_clock: ManualClock
) -> None:
    clock = store_clock
    (sent,) = await store.add_timers([job_at(clock, 1)])
    (cancelled,) = await store.add_timers([job_at(clock, 1, key="appointment-9-reminder")])
    (pending,) = await store.add_timers([job_at(clock, FINISHED_TIMERS_KEPT.total_seconds() * 3)])
    await sender(store)(sent)
    assert await store.cancel_timer(OWNER, cancelled.id)
    clock.advance(FINISHED_TIMERS_KEPT.total_seconds() - 60)
    assert await store.purge_finished_timers(FINISHED_TIMERS_KEPT) == 0  # a month not yet over
    clock.advance(120)
    assert await store.purge_finished_timers(FINISHED_TIMERS_KEPT) == 2
    assert await store.purge_finished_timers(FINISHED_TIMERS_KEPT) == 0
    assert await store.get_timers(OWNER, [sent.id, cancelled.id]) == []
    assert [t.id for t in await store.get_timers(OWNER, [pending.id])] == [pending.id]
