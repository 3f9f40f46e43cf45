"""The store contract, API keys and the audit log: the same tests on SQLite and PostgreSQL
(`store_backends.store`). Keys are created, found, listed, touched and revoked once; the audit
log reads newest first and refuses any change; Idempotency-Key records go by age in slices."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.models import NotificationDraft
from diagnoxix.store.postgres import keys as pg_keys
from diagnoxix.store.protocols import IdempotencyClaim, StoreError
from diagnoxix.store.retention import IDEMPOTENCY_KEPT
from diagnoxix.store.sqlite import keys as sqlite_keys

from .store_sql import count_rows, execute

SLICE = sqlite_keys.IDEMPOTENCY_PURGE_SLICE


def _ms(moment: datetime) -> datetime:
    """As stored: millisecond precision."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_both_stores_purge_the_same_slices() -> None:
    assert pg_keys.IDEMPOTENCY_PURGE_SLICE == SLICE


async def test_a_key_is_found_with_its_hash_listed_in_order_and_revoked_once(
    store: Any, store_clock: ManualClock
) -> None:
    created = await store.create_api_key("k-b", "billing", "h" * 64)
    await store.create_api_key("k-a", "portal", "a" * 64)
    await store.create_api_key("k-B", "lab", "b" * 64)
    store_clock.advance(5)
    await store.create_api_key("k-0", "later", "c" * 64)

    found = await store.find_api_key("k-b")
    assert found is not None
    key, secret_hash = found
    assert secret_hash == "h" * 64
    assert (key.id, key.name, key.created_at) == ("k-b", "billing", _ms(created.created_at))
    assert key.active
    assert key.last_used_at is None
    assert await store.find_api_key("k-missing") is None
    # By creation, then by id byte by byte (upper case before lower case), as SQLite orders text.
    assert [k.id for k in await store.list_api_keys()] == ["k-B", "k-a", "k-b", "k-0"]

    store_clock.advance(1)
    assert await store.revoke_api_key("k-b") is True
    assert await store.revoke_api_key("k-b") is False
    assert await store.revoke_api_key("k-missing") is False
    found = await store.find_api_key("k-b")
    assert found is not None
    assert found[0].revoked_at == _ms(store_clock.now())
    assert not found[0].active
    assert [k.active for k in await store.list_api_keys()] == [True, True, False, True]


async def test_a_key_id_is_taken_once(store: Any) -> None:
    await store.create_api_key("k1", "first", "h" * 64)
    with pytest.raises(StoreError):
        await store.create_api_key("k1", "second", "i" * 64)
    found = await store.find_api_key("k1")
    assert found is not None
    assert (found[0].name, found[1]) == ("first", "h" * 64)


async def test_a_use_is_recorded_without_waiting(store: Any, store_clock: ManualClock) -> None:
    await store.create_api_key("k1", "n", "h" * 64)
    store.touch_api_key("k1")
    store.touch_api_key("k-missing")  # nothing to record, nothing raised
    await store.flush()
    found = await store.find_api_key("k1")
    assert found is not None
    assert found[0].last_used_at == _ms(store_clock.now())

    store_clock.advance(90)
    store.touch_api_key("k1")
    await store.flush()
    (listed,) = await store.list_api_keys()
    assert listed.last_used_at == _ms(store_clock.now())


async def test_the_audit_log_reads_newest_first_in_pages(store: Any) -> None:
    for i in range(7):
        store.record_audit(f"staff:s{i}", f"thing.{i}", f"target-{i}" if i % 2 else None, {"n": i, "é": [i]})
    await store.flush()

    entries = await store.audit_entries(limit=3)
    assert [e["action"] for e in entries] == ["thing.6", "thing.5", "thing.4"]
    newest = entries[0]
    assert set(newest) == {"id", "at", "actor", "action", "target", "details"}
    assert (newest["actor"], newest["target"], newest["details"]) == ("staff:s6", None, {"n": 6, "é": [6]})
    assert entries[1]["target"] == "target-5"
    assert isinstance(newest["id"], int)
    assert [e["action"] for e in await store.audit_entries()] == [f"thing.{i}" for i in range(6, -1, -1)]

    first = await store.audit_page(before_id=None, limit=4)
    assert first == (await store.audit_entries(limit=4))
    rest = await store.audit_page(before_id=first[-1]["id"], limit=4)
    assert [e["action"] for e in rest] == ["thing.2", "thing.1", "thing.0"]
    assert await store.audit_page(before_id=rest[-1]["id"], limit=4) == []


async def test_audit_entries_nobody_waits_for_share_a_few_commits(store: Any) -> None:
    before = await store.counts()
    for i in range(300):
        store.record_audit("test", "delivered", f"n-{i}")
    await store.flush()
    after = await store.counts()
    assert after.commits - before.commits <= 2
    assert len(await store.audit_entries(limit=1000)) == 300


async def test_the_audit_log_refuses_any_change(store: Any) -> None:
    store.record_audit("cli", "apikey.create", "k1", {"name": "n"})
    await store.flush()
    with pytest.raises(StoreError):
        await execute(store, "UPDATE audit_log SET actor = $1", "someone else")
    with pytest.raises(StoreError):
        await execute(store, "DELETE FROM audit_log")
    (entry,) = await store.audit_entries()
    assert (entry["actor"], entry["action"]) == ("cli", "apikey.create")
    # And the store goes on writing after the refusals.
    store.record_audit("cli", "apikey.revoke", "k1")
    await store.flush()
    assert len(await store.audit_entries()) == 2


async def test_an_audit_entry_at_shutdown_is_dropped_with_a_warning(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await store.close()
    caplog.set_level(logging.WARNING, logger="diagnoxix.store")
    store.record_audit("staff:alice", "logout", None)  # never raises into a committed request
    assert [r.getMessage() for r in caplog.records] == ["store.audit_dropped_at_shutdown"]


async def test_idempotency_records_go_after_a_day_in_slices(store: Any, store_clock: ManualClock) -> None:
    count = SLICE + 500

    def draft(i: int) -> NotificationDraft:
        return NotificationDraft(user_id="u", type="t", title=f"n{i}", message="m", data={})

    def claim(i: int) -> IdempotencyClaim:
        return IdempotencyClaim("key-1", f"retry-{i}", "hash", 201)

    async with asyncio.timeout(60):
        await asyncio.gather(*(store.insert_notifications([draft(i)], claim(i)) for i in range(count)))
    store_clock.advance(3600)
    await store.insert_notifications([draft(count)], claim(count))  # younger: kept
    assert await count_rows(store, "idempotency_keys") == count + 1

    store_clock.advance(IDEMPOTENCY_KEPT.total_seconds() - 1800)
    assert await store.purge_idempotency_records(IDEMPOTENCY_KEPT) == SLICE
    assert await store.purge_idempotency_records(IDEMPOTENCY_KEPT) == 500
    assert await store.purge_idempotency_records(IDEMPOTENCY_KEPT) == 0
    assert await count_rows(store, "idempotency_keys") == 1
    # The key of a purged record can be used again: a new request, stored anew.
    (again,) = await store.insert_notifications([draft(0)], claim(0))
    assert again.title == "n0"
