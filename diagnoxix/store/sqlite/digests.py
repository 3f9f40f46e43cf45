"""Digests' joins in the embedded store: a digest is a pending timer under a key (its user and
type); a notification joins it, or starts it when none is pending, in one statement (an upsert on
the pending keys' unique index of migration 0008), committed with whatever decided it (a routing
job's claim, the webhook rules' cursor), so a kill -9 neither loses nor repeats a join.

A digest job that has run is no longer pending: the next join under its key starts a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from diagnoxix.json_encoding import encode_rows
from diagnoxix.store.sqlite.timers import timer_rows
from diagnoxix.store.timer_records import NewTimer

# Each row names one notification (`notification_ids[0]`); joining appends it to the pending job's.
_JOIN = (
    "INSERT INTO timers (id, kind, owner, key, due_at, payload, created_at) SELECT value->>0, value->>1,"
    " value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?) WHERE true"
    " ON CONFLICT (owner, kind, key) WHERE state = 'pending' AND key IS NOT NULL DO UPDATE SET"
    " payload = json_insert(timers.payload, '$.notification_ids[#]',"
    " excluded.payload->>'$.notification_ids[0]')"
)


def join_timers(joins: Sequence[NewTimer], now: datetime) -> tuple[str, list[tuple[Any, ...]]]:
    """The statement that joins (or starts) each digest of `joins`, in their order."""
    _, rows = timer_rows(joins, now)
    return _JOIN, [(encode_rows(rows),)]
