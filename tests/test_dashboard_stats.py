"""The overview's activity figures on either store: what was sent and delivered in the last
minute and hour, and the chart's per-second series, are never lowered by a purge or a
retraction (the store's totals fall then; nothing was "unsent")."""

from __future__ import annotations

import time
from typing import Any

from diagnoxix.clock import ManualClock
from diagnoxix.dashboard.stats import StatsSampler
from diagnoxix.delivery.hub import Hub
from diagnoxix.models import NotificationDraft


def _draft(user: str, title: str, **fields: Any) -> NotificationDraft:
    return NotificationDraft(user_id=user, type="info", title=title, message="m", data={}, **fields)


async def test_a_purge_of_delivered_notifications_is_not_negative_activity(
    store: Any, store_clock: ManualClock
) -> None:
    sampler = StatsSampler(store, Hub(), time.time())
    await sampler.sample()
    notes = await store.insert_notifications([_draft("u1", f"n{i}", ttl_seconds=60) for i in range(5)])
    assert await store.acknowledge("u1", [n.id for n in notes[:3]]) == [n.id for n in notes[:3]]
    await sampler.sample()
    store_clock.advance(61)
    assert await store.purge_expired() == 5
    assert (await store.counts()).stored == 0
    await sampler.sample()
    (late,) = await store.insert_notifications([_draft("u1", "after the purge")])
    await sampler.sample()
    series = sampler.series()
    assert series["sent"] == [5, 0, 1]
    assert series["delivered"] == [3, 0, 0]
    figures = sampler.figures()
    assert (figures["sent_minute"], figures["delivered_minute"]) == (6, 3)
    assert (figures["sent_hour"], figures["delivered_hour"]) == (6, 3)
    assert late.title == "after the purge"
