"""Jobs' leases on PostgreSQL: a job one process took is held from the others for longer than it
can take (a webhook delivery: its timeout and a margin, from the settings), while `GET
/v1/scheduled` and every other read still show the time it is due, not the lease's end; a job
rescheduled is due at its new time. Two stores on one database are two processes; they share a
`ManualClock` unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from diagnoxix.clock import ManualClock
from diagnoxix.config import Settings
from diagnoxix.delivery.timers import TimerScheduler
from diagnoxix.delivery.webhook_sender import WebhookSender
from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.keys import STORE
from diagnoxix.models import format_timestamp
from diagnoxix.store.opening import open_store
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.postgres.timers import LEASE_MARGIN, TIMER_LEASE, TimerLeases
from diagnoxix.store.protocols import Store
from diagnoxix.store.push_records import PUSH_OWNER, PUSH_SEND, NewPushSubscription, PushAttempt
from diagnoxix.store.timer_records import NewTimer
from diagnoxix.store.webhook_records import WEBHOOK_DELIVERY, WEBHOOKS_OWNER

from .conftest import Service
from .test_store_contract_timers import job_at, sender

TIMEOUT = 300.0  # DIAGNOXIX_WEBHOOK_TIMEOUT: far longer than the shortest lease


@pytest.fixture
def clock() -> ManualClock:
    # At a whole second: the store keeps milliseconds, so times read back equal those computed.
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


def _settings(tmp_path: Path, dsn: str, **overrides: Any) -> Settings:
    return Settings(
        db_path=tmp_path / "unused.sqlite3",
        store_url=dsn,
        secret_key="leases-secret-" + "z" * 40,
        log_json=False,
        webhook_allow_http_loopback=True,
        **overrides,
    )


@pytest.fixture
async def stores(pg_dsn: str, clock: ManualClock, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two processes' stores, opened as the server opens its own (from the settings)."""
    settings = _settings(tmp_path, pg_dsn, webhook_timeout_seconds=TIMEOUT)
    async with open_store(settings, clock=clock) as a, open_store(settings, clock=clock) as b:
        yield a, b


def _delivery(clock: ManualClock, endpoint: str = "e1") -> NewTimer:
    payload = {"endpoint": endpoint, "event": "test.event", "since": format_timestamp(clock.now())}
    return NewTimer(WEBHOOK_DELIVERY, WEBHOOKS_OWNER, clock.now(), payload | {"content": {"body": "{}"}})


def test_a_webhook_delivery_is_leased_past_its_timeout_and_other_jobs_for_the_shortest_lease() -> None:
    assert TimerLeases.for_webhook_timeout(10) == TimerLeases(TIMER_LEASE, TIMER_LEASE)
    assert TimerLeases.for_webhook_timeout(TIMEOUT) == TimerLeases(
        TIMER_LEASE, timedelta(seconds=TIMEOUT) + LEASE_MARGIN
    )


async def test_each_kind_is_held_for_its_own_lease(stores: tuple[Store, Store], clock: ManualClock) -> None:
    a, b = stores
    (scheduled,) = await a.add_timers([job_at(clock, 0)])
    (delivery,) = await a.add_timers([_delivery(clock)])
    assert {t.id for t in await a.due_timers(limit=10)} == {scheduled.id, delivery.id}
    # A dies holding both: the scheduled send is late by the shortest lease only.
    clock.advance(TIMER_LEASE.total_seconds())
    (taken,) = await b.due_timers(limit=10)
    assert taken.id == scheduled.id
    await sender(b)(taken)
    lease_end = delivery.due_at + timedelta(seconds=TIMEOUT) + LEASE_MARGIN
    assert await b.next_due_at() == lease_end
    clock.advance((lease_end - clock.now()).total_seconds() - 1)
    assert await b.due_timers(limit=10) == []
    clock.advance(1)
    (again,) = await b.due_timers(limit=10)
    assert (again.id, again.due_at, again.attempts) == (delivery.id, delivery.due_at, 0)


class _GatedReceiver:
    """A webhook receiver that holds every POST until `release()`, then answers 200."""

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        self.arrived = asyncio.Event()
        self._gate = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.posts[request.headers.get("webhook-id", "")] += 1
        self.arrived.set()
        await self._gate.wait()
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    def release(self) -> None:
        self._gate.set()

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()


async def test_a_webhook_slower_than_the_shortest_lease_is_not_sent_again_by_another_process(
    pg_dsn: str, clock: ManualClock, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, pg_dsn, webhook_timeout_seconds=TIMEOUT)
    receiver = _GatedReceiver()
    await receiver.start()
    senders: list[WebhookSender] = []
    running: list[asyncio.Task[int]] = []
    try:
        async with open_store(settings, clock=clock) as a, open_store(settings, clock=clock) as b:
            endpoint = await a.create_webhook_endpoint(
                receiver.url, new_webhook_secret(), ["test.event"], "", "t"
            )
            (job,) = await a.add_timers([_delivery(clock, endpoint.id)])
            schedulers = []
            for store in (a, b):
                sender = WebhookSender(store, clock, settings)
                await sender.start()
                senders.append(sender)
                schedulers.append(TimerScheduler(store, clock, {WEBHOOK_DELIVERY: sender}))
            running.append(asyncio.create_task(schedulers[0].run_due()))
            await asyncio.wait_for(receiver.arrived.wait(), 10)
            # The receiver takes its time (within the timeout): past the shortest lease, another
            # process looks for due jobs.
            clock.advance(TIMER_LEASE.total_seconds() + 30)
            running.append(asyncio.create_task(schedulers[1].run_due()))
            finished, _ = await asyncio.wait({running[1]}, timeout=5)
            assert finished, "the other process took the delivery and is sending it again"
            assert running[1].result() == 0
            assert receiver.posts == {job.id: 1}
            receiver.release()
            assert await asyncio.wait_for(running[0], 10) == 1
            (done,) = await b.get_timers(WEBHOOKS_OWNER, [job.id])
            assert done.state == "done"
            assert receiver.posts == {job.id: 1}
    finally:
        await receiver.close()
        for task in running:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for sender in senders:
            await sender.close()


async def test_a_rescheduled_job_is_due_at_its_new_time_not_when_the_lease_would_end(
    stores: tuple[Store, Store], clock: ManualClock
) -> None:
    a, b = stores
    new = NewPushSubscription("ana", "https://push.example/send/1", "p256dh", "auth", "push.example")
    sub = await a.add_push_subscription(new, limit=5)
    jobs = await a.add_timers(
        [
            job_at(clock, 0),
            _delivery(clock),
            NewTimer(PUSH_SEND, PUSH_OWNER, clock.now(), {"subscription_id": sub.id}),
        ]
    )
    assert len(await a.due_timers(limit=10)) == 3
    soon = clock.now() + timedelta(seconds=5)
    # A failed attempt, each the way its handler records it.
    await a.retry_timer(jobs[0].id, soon)
    await a.webhook_attempt_failed(jobs[1].id, soon, "HTTP 503")
    await a.retry_push(jobs[2].id, PushAttempt("n1", sub.id, sub.host, 503, "retry"), soon)
    assert await b.next_due_at() == soon
    clock.advance(5)
    assert {t.id for t in await b.due_timers(limit=10)} == {j.id for j in jobs}


async def test_a_revived_dead_letter_is_due_at_once(stores: tuple[Store, Store], clock: ManualClock) -> None:
    a, b = stores
    (job,) = await a.add_timers([_delivery(clock)])
    assert len(await a.due_timers(limit=10)) == 1
    await a.webhook_attempt_failed(job.id, None, "HTTP 503")  # dead while its lease still runs
    assert await b.revive_dead_webhook(job.id, "alice")
    assert [t.id for t in await b.due_timers(limit=10)] == [job.id]


MakeService = Callable[..., Awaitable[Service]]


async def test_v1_scheduled_shows_when_a_send_is_due_while_another_process_holds_it(
    make_service: MakeService, pg_dsn: str, clock: ManualClock
) -> None:
    svc = await make_service(clock=clock, store_url=pg_dsn)
    auth = svc.auth()
    due = format_timestamp(clock.now() + timedelta(seconds=60))
    body = {"user_id": "ana", "title": "Appointment tomorrow", "message": "2:00 PM", "deliver_at": due}
    resp = await svc.client.post("/v1/notifications", json=body, headers=auth)
    assert resp.status == 202, await resp.text()
    scheduled = (await resp.json())["scheduled"]
    # Another process took it as it came due (its clock a second ahead of this one's), and is
    # sending it or died doing so.
    other = PgStore(pg_dsn, clock=ManualClock(clock.now() + timedelta(seconds=61)))
    await other.open()
    try:
        (held,) = await other.due_timers(limit=10)
        assert held.id == scheduled["id"]
    finally:
        await other.close()
    one = await svc.client.get(f"/v1/scheduled/{held.id}", headers=auth)
    listed = await svc.client.get("/v1/scheduled", headers=auth)
    assert (await one.json())["scheduled"]["deliver_at"] == scheduled["deliver_at"]
    assert [s["deliver_at"] for s in (await listed.json())["scheduled"]] == [scheduled["deliver_at"]]
    # Once its lease ends, this process sends it.
    clock.advance(61 + TIMER_LEASE.total_seconds())
    store = svc.app[STORE]
    async with asyncio.timeout(10):
        while (await store.get_timers(held.owner, [held.id]))[0].state != "done":
            await asyncio.sleep(0.02)
    assert (await store.counts()).stored == 1
