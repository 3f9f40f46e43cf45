"""Escalation of critical items on durable timers: time is moved (a `ManualClock`), never waited
for; and real `run.py` processes killed with SIGKILL in the middle of a chain."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from diagnoxix.clock import ManualClock
from diagnoxix.keys import CRITICAL, STORE
from diagnoxix.models import NotificationDraft
from diagnoxix.rules.escalation import Policy, Step
from diagnoxix.store.critical_records import Acknowledgement

from .conftest import Service
from .processes import Launcher, child_env, create_api_key

MakeService = Callable[..., Awaitable[Service]]

POLICY = Policy(
    "critical-lab",
    (),
    ("critical",),
    (
        Step(60, "same", ("socket",)),
        Step(120, "group:role:on-call-lab", ("socket", "webhook")),
    ),
)


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


async def _until(check: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _draft(i: int) -> NotificationDraft:
    return NotificationDraft(
        user_id=f"dr-{i % 40}",
        type="lab_critical",
        title=f"Critical value {i}",
        message="",
        data={},
        priority="critical",
    )


async def test_a_thousand_critical_items_each_escalate_once_per_step_and_acknowledged_ones_never(
    make_service: MakeService,
) -> None:
    clock = ManualClock()
    svc = await make_service(clock=clock, escalation_policies=(POLICY,))
    store, critical = svc.app[STORE], svc.app[CRITICAL]
    await store.put_group("role:on-call-lab")
    for member in ("lab-1", "lab-2"):
        await store.set_group_member("role:on-call-lab", member, True)
    await store.set_group_member("role:on-call-lab", "lab-off", False)
    opened = await asyncio.gather(
        *(
            critical.open("apikey:test", _draft(i), target=f"user:dr-{i % 40}", requires_ack=True)
            for i in range(1000)
        )
    )
    items = [item for item, copies in opened]
    assert all(len(copies) == 1 for _, copies in opened)
    # Half are acknowledged before the first step is due; a hundred more between the steps.
    early, late = items[::2], items[1::2][:100]
    await asyncio.gather(*(critical.acknowledge(i, Acknowledgement("dr", "http")) for i in early))
    db = svc.settings.db_path

    def escalated(step: int) -> int:
        return int(
            _rows(db, "SELECT count(*) FROM critical_events WHERE event = 'escalated' AND step = ?", step)[0][
                0
            ]
        )

    clock.advance(59)
    await asyncio.sleep(0.3)
    assert escalated(1) == 0
    clock.advance(1)
    await _until(lambda: escalated(1) == 500)
    await asyncio.gather(*(critical.acknowledge(i, Acknowledgement("dr", "http")) for i in late))
    clock.advance(60)
    await _until(lambda: _rows(db, "SELECT count(*) FROM timers WHERE state = 'pending'") == [(0,)])
    await store.flush()
    per_item = _rows(
        db,
        "SELECT item_id, step, channel, event, count(*) FROM critical_events"
        " WHERE event IN ('escalated', 'channel_failed') GROUP BY item_id, step, channel, event",
    )
    counts: dict[str, list[tuple[int, str, str, int]]] = {}
    for item_id, step, channel, event, n in per_item:
        counts.setdefault(item_id, []).append((step, channel, event, n))
    for item in items:
        rows = sorted(counts.get(item.id, []))
        if item.id in {i.id for i in early}:
            assert rows == [], item.id
        elif item.id in {i.id for i in late}:
            assert rows == [(1, "socket", "escalated", 1)], item.id
        else:  # each step once: the same doctor again, then each lab member on duty, the webhook
            # noted (no endpoint takes critical.escalated here: tests/test_critical_webhooks.py)
            assert rows == [
                (1, "socket", "escalated", 1),
                (2, "socket", "escalated", 2),
                (2, "webhook", "channel_failed", 1),
            ], item.id
    assert _rows(db, "SELECT state, count(*) FROM timers GROUP BY state ORDER BY state") == [
        ("cancelled", 500 * 2 + 100),
        ("done", 1000 + 500 + 400),
    ]
    assert _rows(db, "SELECT count(*) FROM notifications") == [(1000 + 500 + 400 * 2,)]
    assert _rows(db, "SELECT count(*) FROM timers WHERE payload LIKE '%content%'") == [(0,)]


# -- kill -9 in the middle of a chain ---------------------------------------------------------

POLICY_FILE = """
[[policies]]
name = "fast"
priorities = ["critical"]

[[policies.steps]]
after = "2s"
to = "same"

[[policies.steps]]
after = "4s"
to = "same"

[[policies.steps]]
after = "6s"
to = "same"
channels = ["socket", "push"]
"""


async def test_kill_9_in_the_middle_of_a_chain_loses_no_step_and_doubles_none(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "notify.sqlite3"
    policies = tmp_path / "policies.toml"
    policies.write_text(POLICY_FILE, encoding="utf-8")
    _, key = await create_api_key(db)
    env = child_env(DIAGNOXIX_ESCALATION_POLICIES=str(policies))
    server = await launcher.start(db, env=env)
    count = 100
    headers = {"Authorization": f"Bearer {key}"}
    items = [
        {"user_id": f"dr-{i % 7}", "title": f"Critical {i}", "priority": "critical"} for i in range(count)
    ]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/v1/escalation-policies", headers=headers) as resp:
            assert [p["name"] for p in (await resp.json())["policies"]] == ["fast"]
        async with http.post(
            f"{server.url}/v1/notifications", json={"notifications": items}, headers=headers
        ) as resp:
            assert resp.status == 201, await resp.text()
            notes = (await resp.json())["notifications"]
        acked = notes[:10]
        for note in acked:
            path = f"{server.url}/v1/notifications/{note['id']}/acknowledgement"
            async with http.post(path, json={"reason": "seen at the desk"}, headers=headers) as resp:
                assert resp.status == 200, await resp.text()

        def steps_done() -> int:
            return int(
                _rows(db, "SELECT count(*) FROM timers WHERE state = 'done' AND id NOT LIKE '%.0'")[0][0]
            )

        # Killed once the second step has begun for some items (the first is done for all).
        await _until(lambda: steps_done() > 90 * 1, 30)
        await _until(lambda: steps_done() > 90 * 1 + 1 or steps_done() >= 90 * 3, 30)
        assert await server.crash() == -signal.SIGKILL
        at_kill = steps_done()
        await asyncio.sleep(6.5)  # every remaining step came due while the server was down
        restarted = await launcher.start(db, env=env)
        await _until(lambda: _rows(db, "SELECT count(*) FROM timers WHERE state = 'pending'") == [(0,)], 30)
        assert await restarted.terminate() == 0
    print(f"steps done at the kill: {at_kill} of {90 * 3}")
    per_step = _rows(
        db,
        "SELECT step, event, channel, count(*), count(DISTINCT item_id) FROM critical_events"
        " WHERE event IN ('escalated', 'channel_failed')"
        " GROUP BY step, event, channel ORDER BY step, event",
    )
    assert per_step == [
        (1, "escalated", "socket", 90, 90),
        (2, "escalated", "socket", 90, 90),
        (3, "channel_failed", "push", 90, 90),  # nobody here has a push subscription
        (3, "escalated", "socket", 90, 90),
    ]
    assert _rows(db, "SELECT count(*) FROM notifications") == [(count + 90 * 3,)]
    acked_ids = [n["id"] for n in acked]
    assert _rows(
        db,
        "SELECT count(*) FROM critical_copies WHERE item_id IN"
        " (SELECT item_id FROM critical_copies WHERE notification_id IN (SELECT value FROM json_each(?)))",
        __import__("json").dumps(acked_ids),
    ) == [(10,)]
