"""The store contract's fixture: the same test against the embedded SQLite store and against
PostgreSQL (a throwaway cluster, `pg_server`). A contract test takes `store` and names no
backend; a backend-specific one imports the store class itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.sqlite.store import SqliteStore

from .pg_server import PgCluster

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def store_clock() -> ManualClock:
    """The contract store's clock: tests move it by hand."""
    return ManualClock()


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, store_clock: ManualClock
) -> AsyncIterator[Any]:
    """An open, empty store of each backend in turn, closed after the test."""
    opened: Any
    cluster: PgCluster | None = None
    name = ""
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "contract.sqlite3", clock=store_clock)
    else:
        cluster = request.getfixturevalue("pg_cluster")
        name = cluster.create_database()
        opened = PgStore(cluster.dsn(name), clock=store_clock)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        if cluster is not None:
            cluster.drop_database(name)
