"""A serving process answers API-key lookups from memory, yet a revocation takes effect at once:
made here (the dashboard) or by another process on the same file (`run.py apikey revoke`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from diagnoxix.models import ApiKey
from diagnoxix.store.key_cache import KeyCache
from diagnoxix.store.sqlite.files import (
    RevocationMark,
    release_serving_lock,
    signal_key_revoked,
    take_serving_lock,
)
from diagnoxix.store.sqlite.store import SqliteStore

HASH = "h" * 64


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A store opened as the server opens it: holding the serving lock beside the file."""
    store = SqliteStore(tmp_path / "keys.sqlite3", exclusive=True)
    await store.open()
    yield store
    await store.close()


async def _name_of(store: SqliteStore, key_id: str) -> str:
    found = await store.find_api_key(key_id)
    assert found is not None
    return found[0].name


async def _active(store: SqliteStore, key_id: str) -> bool:
    found = await store.find_api_key(key_id)
    assert found is not None
    return found[0].active


def _rename_by_hand(path: Path, key_id: str, name: str) -> None:
    """Change a key's row behind the store's back (no revocation, so nobody is told)."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE api_keys SET name = ? WHERE id = ?", (name, key_id))


async def test_a_serving_store_remembers_the_keys_it_found(serving: SqliteStore) -> None:
    await serving.create_api_key("k1", "billing", HASH)
    assert await _name_of(serving, "k1") == "billing"
    _rename_by_hand(serving.path, "k1", "renamed")
    # Answered from memory: the row read a moment ago, not the database.
    assert await _name_of(serving, "k1") == "billing"


async def test_a_store_that_does_not_serve_reads_every_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cli.sqlite3")
    await store.open()
    try:
        await store.create_api_key("k1", "billing", HASH)
        assert await _name_of(store, "k1") == "billing"
        _rename_by_hand(store.path, "k1", "renamed")
        assert await _name_of(store, "k1") == "renamed"
    finally:
        await store.close()


async def test_a_key_revoked_by_this_process_is_refused_at_once(serving: SqliteStore) -> None:
    await serving.create_api_key("k1", "billing", HASH)
    assert await _active(serving, "k1")
    assert await serving.revoke_api_key("k1")
    assert not await _active(serving, "k1")


async def test_a_key_revoked_by_another_process_is_refused_at_once(serving: SqliteStore) -> None:
    """`run.py apikey revoke` opens its own store on the same file while the server runs."""
    await serving.create_api_key("k1", "billing", HASH)
    await serving.create_api_key("k2", "pharmacy", HASH)
    for key_id in ("k1", "k2"):
        assert await _active(serving, key_id)
    command = SqliteStore(serving.path)
    await command.open()
    try:
        assert await command.revoke_api_key("k1")
    finally:
        await command.close()
    assert not await _active(serving, "k1")
    # Every key is read again after a revocation, not only the revoked one.
    _rename_by_hand(serving.path, "k2", "renamed")
    command = SqliteStore(serving.path)
    await command.open()
    try:
        assert not await command.revoke_api_key("k1")  # already revoked: nothing to tell
        assert await command.revoke_api_key("k2")
    finally:
        await command.close()
    assert not await _active(serving, "k2")
    assert await _name_of(serving, "k2") == "renamed"


async def test_a_revocation_counted_while_a_key_was_read_is_not_forgotten(serving: SqliteStore) -> None:
    """The lookup that began before a revocation was counted must not leave its row behind."""
    cache = serving._key_cache
    assert cache is not None
    await serving.create_api_key("k1", "billing", HASH)
    found = await serving.find_api_key("k1")
    assert found is not None
    cache.forget()
    mark = cache.mark()
    signal_key_revoked(serving.path)  # another process revoked something meanwhile
    cache.put("k1", found, mark)
    assert cache.get("k1") is None
    mark = cache.mark()
    cache.forget()  # ... or this one did
    cache.put("k1", found, mark)
    assert cache.get("k1") is None


@pytest.fixture
def lock_fd(tmp_path: Path) -> Iterator[int]:
    """The serving lock of a database that is not there: only its revocation mark is used."""
    fd = take_serving_lock(tmp_path / "none.sqlite3")
    yield fd
    release_serving_lock(fd)


async def test_a_remembered_key_is_read_again_after_its_time(lock_fd: int) -> None:
    """The backstop for a revocation nobody marked (a process that died right after its commit)."""
    cache = KeyCache(RevocationMark(lock_fd), seconds=0.05)
    key = ApiKey("k1", "billing", datetime.now(UTC), None, None)
    cache.put("k1", (key, HASH), cache.mark())
    assert cache.get("k1") == (key, HASH)
    await asyncio.sleep(0.1)
    assert cache.get("k1") is None
    cache.close()


async def test_a_revoked_key_is_never_remembered(lock_fd: int) -> None:
    cache = KeyCache(RevocationMark(lock_fd))
    revoked = ApiKey("k1", "billing", datetime.now(UTC), None, datetime.now(UTC))
    cache.put("k1", (revoked, HASH), cache.mark())
    assert cache.get("k1") is None
    cache.close()
