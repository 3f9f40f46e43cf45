"""PostgreSQL only, accounts: two `PgStore`s on one database are two processes of a scaled-out
deployment. What they race for (a username, a session, a device's revocation) is settled by the
database, once; what one writes the other reads; text sorts as SQLite sorts it, whatever the
database's collation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.store.postgres.database import PgStore

from .pg_server import PgCluster, two_pg_stores

ROUNDS = 25
HOUR = timedelta(hours=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def stores(pg_dsn: str, clock: ManualClock) -> AsyncIterator[tuple[PgStore, PgStore]]:
    """Two processes' stores on one database (the same clock: the machines agree on the time)."""
    async with two_pg_stores(pg_dsn, clock) as both:
        yield both


async def _both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    """Both at once, as two processes would; bounded in time."""
    async with asyncio.timeout(20):
        one, two = await asyncio.gather(first, second)
        return one, two


async def test_a_staff_account_created_twice_at_once_exists_once(stores: tuple[PgStore, PgStore]) -> None:
    a, b = stores
    for i in range(ROUNDS):
        name = f"admin{i}"
        results = await _both(
            a.create_staff_account(name, f"hash-a-{i}", "admin"),
            b.create_staff_account(name, f"hash-b-{i}", "admin"),
        )
        assert sorted(results) == [False, True], (i, results)
        winner = "a" if results[0] else "b"
        for store in (a, b):
            account = await store.find_staff_account(name)
            assert account is not None
            assert account.password_hash == f"hash-{winner}-{i}"
    assert await a.count_staff_accounts() == await b.count_staff_accounts() == ROUNDS


async def test_a_session_signed_out_from_two_processes_is_revoked_once(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    a, b = stores
    await a.create_staff_account("alice", "hash", "staff")
    for i in range(ROUNDS):
        await a.create_staff_session(f"sid-{i}", "alice", clock.now() + HOUR)
        results = await _both(a.revoke_staff_session(f"sid-{i}"), b.revoke_staff_session(f"sid-{i}"))
        assert sorted(results) == [False, True], (i, results)


async def test_a_device_revoked_through_one_process_is_in_the_others_revoked_tokens(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    a, b = stores
    now = clock.now()
    await a.record_device("t1", "dora", now, now + HOUR)
    await a.record_device("t2", "dora", now, now + HOUR)
    assert await b.revoked_tokens() == []

    assert [t for t, _ in await b.revoke_devices("dora", "t1")] == ["t1"]
    assert [t for t, _ in await a.revoked_tokens()] == ["t1"]
    device = await a.find_device("dora", "t1")
    assert device is not None
    assert device.revoked_at is not None
    # The other process cannot revoke it again.
    assert await a.revoke_devices("dora", "t1") == []
    assert [t for t, _ in await a.revoke_devices("dora", None)] == ["t2"]
    assert sorted(t for t, _ in await b.revoked_tokens()) == ["t1", "t2"]


async def test_two_processes_revoking_the_same_devices_each_hear_only_their_own(
    stores: tuple[PgStore, PgStore], clock: ManualClock
) -> None:
    """Each revocation is published once by whoever made it: a token both processes claim to
    have revoked would be announced twice, one neither claims would never be."""
    a, b = stores
    now = clock.now()
    for i in range(ROUNDS):
        user = f"user{i}"
        tokens = [f"{user}-t{j}" for j in range(8)]
        for token_id in tokens:
            await a.record_device(token_id, user, now, now + HOUR)
        revoked_a, revoked_b = await _both(a.revoke_devices(user, None), b.revoke_devices(user, None))
        ids_a, ids_b = {t for t, _ in revoked_a}, {t for t, _ in revoked_b}
        assert not ids_a & ids_b, i
        assert ids_a | ids_b == set(tokens), i


async def test_a_key_s_last_use_never_goes_back_across_processes(pg_dsn: str) -> None:
    """Processes' clocks differ a little, and touches nobody waits for commit in any order:
    the later use stays recorded."""
    later = ManualClock()
    earlier = ManualClock(later.now() - timedelta(seconds=5))
    a, b = PgStore(pg_dsn, clock=later), PgStore(pg_dsn, clock=earlier)
    await a.open()
    await b.open()
    try:
        await a.create_api_key("k1", "n", "h" * 64)
        a.touch_api_key("k1")
        await a.flush()
        b.touch_api_key("k1")
        await b.flush()
        found = await b.find_api_key("k1")
        assert found is not None
        assert found[0].last_used_at is not None
        assert found[0].last_used_at > earlier.now()
    finally:
        await b.close()
        await a.close()


async def test_bookkeeping_queued_at_close_is_committed_for_the_other_processes(
    stores: tuple[PgStore, PgStore],
) -> None:
    a, b = stores
    await a.create_api_key("k1", "n", "h" * 64)
    a.touch_api_key("k1")
    a.record_audit("test", "close.check", None)
    await a.close()
    assert [e["action"] for e in await b.audit_entries()] == ["close.check"]
    found = await b.find_api_key("k1")
    assert found is not None
    assert found[0].last_used_at is not None


@pytest.fixture
async def icu_dsn(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A database whose default collation is ICU's English one (case folded, punctuation last),
    as many deployments' are."""
    name = f"t_icu_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu"
            " ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    finally:
        await admin.close()
    try:
        yield pg_cluster.dsn(name)
    finally:
        pg_cluster.drop_database(name)


async def test_listings_order_text_as_sqlite_does_on_any_collation(icu_dsn: str) -> None:
    clock = ManualClock()
    store = PgStore(icu_dsn, clock=clock)
    await store.open()
    try:
        # The database's own order is not byte order: a lower-case letter before an upper-case one.
        assert await store._fetchval("SELECT 'a' < 'B'") is True
        now = clock.now()
        for token_id in ("t-b", "t-a", "t-B", "t_c"):
            await store.record_device(token_id, "dora", now, now + HOUR)
            await store.create_api_key(token_id, "n", "h" * 64)
        expected = sorted(["t-b", "t-a", "t-B", "t_c"], key=lambda t: t.encode())
        assert [d.token_id for d in await store.list_devices("dora", limit=10)] == expected
        assert [k.id for k in await store.list_api_keys()] == expected
    finally:
        await store.close()
