"""Digests' joins on PostgreSQL: a digest is a pending timer under a key (its user and type); a
notification joins it, or starts it when none is pending, in one upsert on the pending keys'
unique index (`timers_pending_key`), committed with whatever decided it (a routing job's claim,
the webhook rules' cursor), so a kill -9 neither loses nor repeats a join.

Across processes the index decides: two joins of one key wait for each other, and a join racing
the digest's close (its claim makes it done) starts a new digest once the close commits.

A digest job that has run is no longer pending: the next join under its key starts a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from diagnoxix.store.postgres.timers import timer_rows
from diagnoxix.store.timer_records import NewTimer

# Each row names one notification (`notification_ids[0]`); joining appends it to the pending job's.
# One statement per join: PostgreSQL's upsert cannot change a row twice in one statement, and two
# joins of one key (one routing job, two notifications of a type) must both land.
_IDS = "json_nul_hidden({}.payload)::json -> 'notification_ids'"
_JOIN = (
    "INSERT INTO timers (id, kind, owner, key, due_at, payload, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
    " ON CONFLICT (owner, kind, key) WHERE state = 'pending' AND key IS NOT NULL DO UPDATE SET"
    " payload = json_text_set(timers.payload, json_build_object('notification_ids',"
    " (SELECT json_agg(a.id ORDER BY a.n) FROM ("
    f"SELECT o.id, o.n FROM json_array_elements({_IDS.format('timers')}) WITH ORDINALITY AS o(id, n)"
    f" UNION ALL SELECT {_IDS.format('excluded')} -> 0, 9223372036854775807) AS a)))"
)


async def join_timers(conn: Any, joins: Sequence[NewTimer], now: datetime) -> None:
    """Join (or start) each digest of `joins`, in their order, on `conn` (inside a write)."""
    if not joins:
        return
    _, columns = timer_rows(joins, now)
    await conn.executemany(_JOIN, list(zip(*columns, strict=True)))
