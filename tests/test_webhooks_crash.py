"""kill -9 with webhooks pending: after a restart each notification's webhook goes out exactly once
to a receiver that answered (real `run.py` processes, a real receiver that verifies signatures)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import defaultdict
from pathlib import Path

import aiohttp

from diagnoxix.config import Settings
from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.rules.webhooks import NOTIFICATION_CREATED
from diagnoxix.store.opening import open_store

from .processes import Launcher, Server, child_env, create_api_key
from .webhook_receiver import HANG, Receiver


async def _send(http: aiohttp.ClientSession, server: Server, key: str, users: list[str]) -> list[str]:
    body = {"notifications": [{"user_id": u, "title": "Lab note", "type": "lab_note"} for u in users]}
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(f"{server.url}/v1/notifications", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        return [n["id"] for n in (await resp.json())["notifications"]]


async def _answered(receiver: Receiver, count: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while len(receiver.answered) < count:
            await asyncio.sleep(0.05)


async def test_kill_9_with_webhooks_pending_each_goes_out_once_after_restart(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "notify.sqlite3"
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ntypes = ["lab_note"]\n', encoding="utf-8")
    env = child_env(
        DIAGNOXIX_WEBHOOK_RULES=str(rules),
        DIAGNOXIX_WEBHOOK_ALLOW_HTTP_LOOPBACK="1",
        DIAGNOXIX_WEBHOOK_TIMEOUT="30",
    )
    receiver = await Receiver(new_webhook_secret(), hang_seconds=5.0).start()
    try:
        # The endpoint as staff configure it (the dashboard writes the same row).
        async with open_store(Settings(db_path=db)) as store:
            await store.create_webhook_endpoint(
                receiver.url, receiver.secret, (NOTIFICATION_CREATED,), "SMS gateway", "test"
            )
        _, key = await create_api_key(db)
        server = await launcher.start(db, env=env)
        async with aiohttp.ClientSession() as http:
            # Delivered before the crash: never sent again.
            before = await _send(http, server, key, [f"before-{i}" for i in range(5)])
            await _answered(receiver, 5)
            # In flight at the crash: the receiver has them and has not answered.
            receiver.answer = HANG
            in_flight = await _send(http, server, key, [f"flight-{i}" for i in range(10)])
            await receiver.wait_for(15)
            # Committed just before the crash: enqueued or not yet, the rules' cursor knows.
            last = await _send(http, server, key, [f"last-{i}" for i in range(10)])
            assert await server.crash() == -signal.SIGKILL

            receiver.answer = 200
            restarted = await launcher.start(db, env=env)
            await _answered(receiver, 25)
            await asyncio.sleep(1.0)  # a repeat would come now
            assert await restarted.terminate() == 0
    finally:
        await receiver.close()

    assert all(r.verified for r in receiver.received)
    assert set(receiver.answered.values()) == {1}, "each delivery answered 2xx exactly once"
    by_notification: dict[str, set[str]] = defaultdict(set)
    for got in receiver.received:
        if got.body is not None and receiver.answered[got.webhook_id]:
            by_notification[got.body["data"]["notification_id"]].add(got.webhook_id)
    assert set(by_notification) == {*before, *in_flight, *last}
    assert all(len(ids) == 1 for ids in by_notification.values()), "one webhook per notification"
    assert sum(r.body["data"]["notification_id"] in before for r in receiver.received if r.body) == 5
    with sqlite3.connect(db) as conn:
        states = conn.execute("SELECT state, count(*) FROM timers WHERE kind = 'webhook' GROUP BY state")
        assert dict(states.fetchall()) == {"done": 25}
