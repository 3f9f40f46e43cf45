"""Direct SQL on either store, for a contract test's setup and its look at the tables: one
statement written with PostgreSQL's `$n` placeholders (SQLite reads them as `?n`), run through the
store's own writer or reader. Only what no protocol method can do yet belongs here."""

from __future__ import annotations

import re
from typing import Any

from diagnoxix.store.postgres.access import WriteTx
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.sqlite.store import SqliteStore


def _sqlite(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


async def execute(store: Any, sql: str, *args: Any) -> int:
    """Run one write in the store's next batch; returns the rows it changed."""
    if isinstance(store, PgStore):

        async def work(tx: WriteTx) -> int:
            status = await tx.conn.execute(sql, *args)
            return int(str(status).rsplit(" ", 1)[-1])

        return await store._write(work)
    assert isinstance(store, SqliteStore)
    return await store._execute(_sqlite(sql), [args])


async def value(store: Any, sql: str, *args: Any) -> Any:
    """The first column of the first row of one read."""
    if isinstance(store, PgStore):
        return await store._fetchval(sql, *args)
    assert isinstance(store, SqliteStore)
    rows = await store._read(_sqlite(sql), args)
    return rows[0][0] if rows else None


async def count_rows(store: Any, table: str) -> int:
    return int(await value(store, f"SELECT count(*) FROM {table}"))
