"""PostgreSQL only: each process answers API-key lookups from the keys it found recently, and a
revocation made in any process reaches every process's cache through PostgreSQL's
LISTEN/NOTIFY, well before the cache's time limit. While a process cannot listen, it trusts
nothing it remembers. Two `PgStore`s on one database are two processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from diagnoxix.models import ApiKey
from diagnoxix.store.key_cache import KEY_CACHE_SECONDS, KeyCache
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.postgres.key_revocations import CHANNEL, RevocationListener

from .pg_server import free_port, two_pg_stores

HASH = "h" * 64


@pytest.fixture
async def stores(pg_dsn: str) -> AsyncIterator[tuple[PgStore, PgStore]]:
    async with two_pg_stores(pg_dsn) as both:
        yield both


async def _listening(store: PgStore) -> None:
    """The first lookup starts the listener; wait until it listens."""
    await store.find_api_key("nobody")
    async with asyncio.timeout(10):
        while not store._revocations.listening:
            await asyncio.sleep(0.02)


async def _name(store: PgStore, key_id: str) -> str:
    found = await store.find_api_key(key_id)
    assert found is not None
    return found[0].name


async def _by_hand(dsn: str, sql: str, *args: object) -> None:
    """Change the database behind the stores' backs: nobody is told."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_a_process_remembers_the_keys_it_found(stores: tuple[PgStore, PgStore], pg_dsn: str) -> None:
    a, _ = stores
    await a.create_api_key("k1", "billing", HASH)
    await _listening(a)
    assert await _name(a, "k1") == "billing"
    await _by_hand(pg_dsn, "UPDATE api_keys SET name = 'renamed' WHERE id = 'k1'")
    # From memory: no read of the database.
    assert await _name(a, "k1") == "billing"


async def test_a_revocation_in_one_process_reaches_the_others_cache_at_once(
    stores: tuple[PgStore, PgStore],
) -> None:
    a, b = stores
    await a.create_api_key("k2", "lab", HASH)
    await _listening(a)
    found = await a.find_api_key("k2")
    assert found is not None
    assert found[0].active
    assert await b.revoke_api_key("k2")
    revoked_at = time.monotonic()
    async with asyncio.timeout(KEY_CACHE_SECONDS / 2):  # the notification, not the time limit
        while True:
            found = await a.find_api_key("k2")
            assert found is not None
            if not found[0].active:
                break
            await asyncio.sleep(0.01)
    assert time.monotonic() - revoked_at < KEY_CACHE_SECONDS / 2
    # The process that revoked it knew at once.
    found = await b.find_api_key("k2")
    assert found is not None
    assert not found[0].active


async def test_a_revocation_is_told_only_if_it_commits(stores: tuple[PgStore, PgStore], pg_dsn: str) -> None:
    a, b = stores
    await a.create_api_key("k3", "pharmacy", HASH)
    heard: list[str] = []
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.add_listener(CHANNEL, lambda *args: heard.append(args[1]))
        assert not await b.revoke_api_key("missing")  # nothing changed: nobody told
        assert await b.revoke_api_key("k3")
        assert not await a.revoke_api_key("k3")  # already revoked: nobody told again
        await asyncio.sleep(0.3)
        assert len(heard) == 1
    finally:
        await conn.close()


async def test_a_process_that_cannot_listen_trusts_nothing_it_remembers(
    stores: tuple[PgStore, PgStore], pg_dsn: str
) -> None:
    a, _ = stores
    await a.create_api_key("k4", "billing", HASH)
    await _listening(a)
    assert await _name(a, "k4") == "billing"
    # Its listening session is cut (PostgreSQL restarted, a proxy dropped it).
    await _by_hand(
        pg_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE query LIKE 'LISTEN%' AND datname = current_database()",
    )
    async with asyncio.timeout(5):
        while a._revocations.listening:
            await asyncio.sleep(0.01)
    await _by_hand(pg_dsn, "UPDATE api_keys SET name = 'renamed' WHERE id = 'k4'")
    # Not listening: every lookup reads the database.
    assert await _name(a, "k4") == "renamed"
    # It listens again by itself, and remembers again.
    async with asyncio.timeout(10):
        while not a._revocations.listening:
            await asyncio.sleep(0.02)
    assert await _name(a, "k4") == "renamed"
    await _by_hand(pg_dsn, "UPDATE api_keys SET name = 'again' WHERE id = 'k4'")
    assert await _name(a, "k4") == "renamed"


async def test_nothing_is_remembered_while_nobody_listens() -> None:
    """A process whose listening session cannot connect reads every lookup from the database."""
    listener = RevocationListener(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    listener.start()
    cache = KeyCache(listener)
    key = (ApiKey("k5", "billing", datetime.now(UTC), None, None), HASH)
    reads: list[str] = []

    async def read(key_id: str) -> tuple[ApiKey, str]:
        reads.append(key_id)
        return key

    try:
        for _ in range(3):
            assert await cache.find("k5", read) == key
            await asyncio.sleep(0.05)
        assert reads == ["k5"] * 3
        assert not listener.listening
    finally:
        await listener.aclose()
