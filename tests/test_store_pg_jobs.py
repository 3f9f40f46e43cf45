"""What only PostgreSQL can get wrong about jobs: several processes over one database. Two
`PgStore`s on one database are two processes (each its own pool and writer connection); they
share a `ManualClock`, as processes share the real time.

A due job is run by one process only (`due_timers` claims it for `TIMER_LEASE`); one that a dead
process held is run by another once the lease ends; cancels, digests' joins, the webhook rules'
cursor and the push subscriptions' limit hold across processes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.delivery.timers import Handler, TimerScheduler
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.postgres.timers import TIMER_LEASE
from diagnoxix.store.protocols import IdempotencyConflict
from diagnoxix.store.push_records import NewPushSubscription
from diagnoxix.store.timer_records import NewTimer, Timer

from .pg_server import two_pg_stores
from .test_store_contract_timers import KIND, OWNER, job_at, sender, stored

JOBS = 200


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def stores(pg_dsn: str, clock: ManualClock) -> AsyncIterator[tuple[PgStore, PgStore]]:
    """Two processes' stores on one database (the same clock: the machines agree on the time)."""
    async with two_pg_stores(pg_dsn, clock) as both:
        yield both


async def test_two_processes_racing_for_due_jobs_claim_each_once(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    a, b = stores
    await a.add_timers([job_at(clock, 0, user=f"u{i}") for i in range(JOBS)])
    claimed: dict[str, list[str]] = {"a": [], "b": []}

    async def drain(name: str, store: PgStore) -> None:
        # Small slices, several at once per process: many claims interleave across the two.
        while jobs := (await asyncio.gather(*(store.due_timers(limit=7) for _ in range(3)))):
            got = [job.id for batch in jobs for job in batch]
            if not got:
                return
            claimed[name].extend(got)

    await asyncio.wait_for(asyncio.gather(drain("a", a), drain("b", b)), 30)
    every = claimed["a"] + claimed["b"]
    twice = [tid for tid, n in Counter(every).items() if n > 1]
    assert twice == [], f"{len(twice)} jobs claimed by both processes"
    assert len(every) == JOBS
    assert claimed["a"], "both processes took part"
    assert claimed["b"], "both processes took part"
    # Claimed and unfinished: pending still, due again only when the lease ends.
    assert await b.due_timers(limit=JOBS) == []
    next_due = await a.next_due_at()
    assert next_due is not None
    assert next_due > clock.now()


async def test_two_schedulers_run_each_job_once(stores: tuple[PgStore, PgStore], clock: ManualClock) -> None:
    a, b = stores
    runs: Counter[str] = Counter()

    def counting(store: PgStore) -> Handler:
        send = sender(store)

        async def handler(job: Timer) -> None:
            runs[job.id] += 1
            await asyncio.sleep(0)  # the other process gets a turn mid-slice
            await send(job)

        return handler

    jobs = await a.add_timers([job_at(clock, 5, user=f"u{i}") for i in range(JOBS)])
    first = TimerScheduler(a, clock, {KIND: counting(a)})
    second = TimerScheduler(b, clock, {KIND: counting(b)})
    clock.advance(5)
    await asyncio.wait_for(asyncio.gather(first.run_due(), second.run_due()), 30)
    assert sorted(runs) == sorted(j.id for j in jobs)
    assert set(runs.values()) == {1}, "a job was run by both processes"
    assert first.ran + second.ran == JOBS
    assert await stored(a) == JOBS
    done = await a.get_timers(OWNER, [j.id for j in jobs])
    assert {j.state for j in done} == {"done"}


async def test_a_job_held_by_a_dead_process_runs_elsewhere_when_its_lease_ends(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    a, b = stores
    (job,) = await a.add_timers([job_at(clock, 10)])
    clock.advance(10)
    (held,) = await a.due_timers(limit=10)
    assert held.due_at == job.due_at
    await a.close()  # killed mid-job: nothing finished it
    assert await b.due_timers(limit=10) == []
    assert await b.next_due_at() == job.due_at + TIMER_LEASE  # the lease's end
    clock.advance(TIMER_LEASE.total_seconds() - 1)
    assert await b.due_timers(limit=10) == []
    clock.advance(1)
    (again,) = await b.due_timers(limit=10)
    # Due since the lease ended, with its own due time; not an attempt that failed.
    assert (again.id, again.due_at, again.attempts) == (job.id, job.due_at, 0)
    await sender(b)(again)
    with pytest.raises(IdempotencyConflict):  # the dead process's run, had it got that far
        await sender(b)(held)
    assert await stored(b) == 1


async def test_a_cancel_in_one_process_and_a_run_in_another_never_both_win(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    a, b = stores
    jobs = await a.add_timers([job_at(clock, 1, user=f"u{i}") for i in range(60)])
    send = sender(a)

    async def run(job: Timer, delay: float) -> bool:
        await asyncio.sleep(delay)
        try:
            await send(job)
        except IdempotencyConflict:
            return False
        return True

    async def cancel(job: Timer, delay: float) -> bool:
        await asyncio.sleep(delay)
        return bool(await b.cancel_timer(OWNER, job.id))

    async def pair(i: int, job: Timer) -> tuple[bool, bool]:
        if i < 10:  # the run commits first
            return await run(job, 0), await cancel(job, 0)
        if i < 20:  # the cancel commits first
            cancelled = await cancel(job, 0)
            return await run(job, 0), cancelled
        # At once, staggered by a few milliseconds each way: the processes' commits interleave.
        sent, cancelled = await asyncio.gather(run(job, i % 3 * 0.004), cancel(job, i % 4 * 0.003))
        return sent, cancelled

    results = await asyncio.gather(*(pair(i, job) for i, job in enumerate(jobs)))
    for job, (sent, cancelled) in zip(jobs, results, strict=True):
        assert sent != cancelled, job.id
    found = {j.id: j.state for j in await b.get_timers(OWNER, [j.id for j in jobs])}
    assert [found[j.id] for j in jobs] == ["done" if sent else "cancelled" for sent, _ in results]
    assert await stored(a) == sum(sent for sent, _ in results)


async def test_joins_of_one_digest_from_two_processes_all_land_in_it(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    a, b = stores

    def join(nid: str) -> NewTimer:
        payload = {"user_id": "ana", "type": "lab", "notification_ids": [nid]}
        return NewTimer("webhook_digest", "system:digest", clock.now() + timedelta(seconds=300), payload, "k")

    ids = [f"n{i}" for i in range(40)]
    await asyncio.gather(
        *(
            (a if i % 2 else b).enqueue_webhooks([], through_seq=i, joins=[join(nid)])
            for i, nid in enumerate(ids)
        )
    )
    digest = await a.find_timer_by_key("system:digest", "webhook_digest", "k")
    assert digest is not None
    assert sorted(digest.payload["notification_ids"]) == sorted(ids)
    assert len(await a.pending_timers("system:digest", "webhook_digest", after_id=None, limit=10)) == 1
    # The rules' cursor only moved up, whichever process committed last.
    assert await b.webhook_rules_cursor() == len(ids) - 1


async def test_the_push_subscription_limit_holds_across_processes(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    a, b = stores

    def new(i: int) -> NewPushSubscription:
        return NewPushSubscription(
            "ana", f"https://push.example/{i}", "B" + "A" * 86, "A" * 22, "push.example"
        )

    for i in range(0, 30, 2):
        clock.advance(1)
        # One registration in each process at once: both transactions overlap.
        await asyncio.gather(
            a.add_push_subscription(new(i), limit=3), b.add_push_subscription(new(i + 1), limit=3)
        )
        listed = await a.list_push_subscriptions("ana")
        assert len(listed) <= 3, f"round {i // 2}: {len(listed)} subscriptions"
    assert {s.endpoint for s in listed} >= {"https://push.example/28", "https://push.example/29"}


# Each query of the jobs (as the modules write it) and the index it can read by.
PLANS = [
    (
        "SELECT id FROM timers WHERE kind = 'webhook'"
        " AND (json_nul_hidden(payload)::json ->> 'notification_id') = ANY('{n1}'::text[])",
        "timers_webhook_notification",
    ),
    (
        "SELECT id FROM timers WHERE kind = 'webhook' AND state = 'failed'"
        " ORDER BY finished_at DESC, id DESC LIMIT 10",
        "timers_dead_webhooks",
    ),
    (
        "SELECT id FROM timers WHERE state = 'pending' AND due_at <= '2026-01-01T00:00:00.000Z'"
        " ORDER BY due_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED",
        "timers_due",
    ),
    ("SELECT id FROM push_attempts WHERE at <= '2026-01-01' ORDER BY at LIMIT 1000", "push_attempts_by_age"),
]


async def test_the_jobs_queries_can_read_by_their_indexes(pg_dsn: str) -> None:
    store = PgStore(pg_dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        for query, index in PLANS:
            plan = "\n".join(str(row[0]) for row in await conn.fetch(f"EXPLAIN {query}"))
            assert index in plan, plan
    finally:
        await conn.close()


async def _held_by_another_process(dsn: str, job_id: str, status: int) -> asyncpg.Connection:
    """Another process's claim of the job, inserted and not yet committed (its transaction open)."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN")
    await conn.execute(
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status, created_at)"
        " VALUES ('timer', $1, '', '[]', $2, '2026-01-01T00:00:00.000Z')",
        job_id,
        status,
    )
    return conn


async def _waiting_on_a_lock(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(10):
            while not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ):
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_a_run_or_a_cancel_meeting_the_other_mid_commit_in_another_process_loses_cleanly(
    pg_dsn: str, clock: ManualClock
) -> None:
    store = PgStore(pg_dsn, clock=clock)
    await store.open()
    try:
        ran, cancelled = await store.add_timers(
            [job_at(clock, 0, user="ran"), job_at(clock, 0, user="cancelled")]
        )
        # A cancel mid-commit elsewhere: the run's claim waits for it, then is refused as a conflict.
        other = await _held_by_another_process(pg_dsn, cancelled.id, 0)
        run = asyncio.ensure_future(sender(store)(cancelled))
        await _waiting_on_a_lock(pg_dsn)
        await other.execute("COMMIT")
        await other.close()
        with pytest.raises(IdempotencyConflict):
            await run
        # A run mid-commit elsewhere (its claim makes the job done): the cancel waits, then loses.
        other = await _held_by_another_process(pg_dsn, ran.id, 201)
        cancel = asyncio.create_task(store.cancel_timer(OWNER, ran.id))
        await _waiting_on_a_lock(pg_dsn)
        await other.execute("COMMIT")
        await other.close()
        assert await cancel is False
        (found,) = await store.get_timers(OWNER, [ran.id])
        assert found.state == "done"
        assert await stored(store) == 0
    finally:
        await store.close()
