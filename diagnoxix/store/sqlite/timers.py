"""Durable timers in the embedded store (`TimerStore`): jobs due at a time, in `timers`.

A mixin of `SqliteStore`, kept apart so each module holds one concern. A job is run exactly once
because its effect and its completion commit together: its notifications are stored with the
idempotency claim ('timer', job id), and a trigger (migration 0008) marks the job done when that
claim is inserted. A cancellation inserts the same claim (status 0) in the transaction that marks
the job cancelled, so whichever commits first wins and the other finds the claim taken.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from diagnoxix.json_encoding import encode_json, encode_rows
from diagnoxix.models import format_timestamp, new_ids, parse_timestamp
from diagnoxix.store.protocols import IdempotencyClaim, IdempotencyConflict, StoreError, TimerKeyTaken
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer, Timer

_COLUMNS = "id, kind, owner, key, due_at, payload, state, attempts, created_at, finished_at, result"
_PENDING_KEYS = (
    "SELECT t.key FROM timers AS t JOIN json_each(?) AS k ON t.owner = k.value->>0"
    " AND t.kind = k.value->>1 AND t.key = k.value->>2 WHERE t.state = 'pending'"
)
# A job that has run, was cancelled or failed keeps no content (see migration 0008).
_WITHOUT_CONTENT = "json_remove(payload, '$.content')"
_CLAIM = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
    " created_at) VALUES (?,?,?,?,?,?)"
)


# Finished jobs deleted per statement: the writer is never held long.
TIMER_PURGE_SLICE = 1000


def timer_rows(timers: Sequence[NewTimer], now: datetime) -> tuple[list[str], list[list[Any]]]:
    """New ids for `timers` and their rows for `insert_timers`."""
    stamp = format_timestamp(now)
    ids = new_ids(len(timers), int(now.timestamp() * 1000))
    rows = [
        [tid, t.kind, t.owner, t.key, format_timestamp(t.due_at), encode_json(t.payload), stamp]
        for tid, t in zip(ids, timers, strict=True)
    ]
    return ids, rows


def insert_timers(rows: list[list[Any]]) -> tuple[str, list[tuple[Any, ...]]]:
    """The statement that inserts jobs' rows (from `timer_rows`) in one go."""
    return (
        "INSERT INTO timers (id, kind, owner, key, due_at, payload, created_at) SELECT value->>0,"
        " value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?)",
        [(encode_rows(rows),)],
    )


def timer_row(row: tuple[Any, ...]) -> Timer:
    tid, kind, owner, key, due, payload, state, attempts, created, finished, result = row
    return Timer(
        id=tid,
        kind=kind,
        owner=owner,
        key=key,
        due_at=parse_timestamp(due),
        payload=json.loads(payload),
        state=state,
        attempts=int(attempts),
        created_at=parse_timestamp(created),
        finished_at=parse_timestamp(finished) if finished else None,
        result=tuple(json.loads(result)),
    )


class TimerQueries(SqliteAccess):
    """Durable timers (`TimerStore`), on the store's primitives (`SqliteAccess`)."""

    async def add_timers(
        self, timers: Sequence[NewTimer], idempotency: IdempotencyClaim | None = None
    ) -> list[Timer]:
        now = self._clock.now()
        stamp = format_timestamp(now)
        ids, rows = timer_rows(timers, now)
        await self._refuse_taken_keys(timers)
        statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        if idempotency is not None:
            claim = idempotency
            statements.append(
                (
                    _CLAIM,
                    [(claim.api_key_id, claim.key, claim.request_hash, json.dumps(ids), claim.status, stamp)],
                )
            )
        statements.append(insert_timers(rows))
        try:
            await self._execute_all(statements)
        except StoreError:
            # Refused: by a request racing this one with the same claim or the same key (checked
            # above, so only a race gets here), or by the database itself.
            if idempotency is not None and await self._claim_taken(idempotency.api_key_id, idempotency.key):
                raise IdempotencyConflict("this Idempotency-Key was already used") from None
            await self._refuse_taken_keys(timers)
            raise
        return await self._by_ids(ids)

    async def _refuse_taken_keys(self, timers: Sequence[NewTimer]) -> None:
        keyed = [[t.owner, t.kind, t.key] for t in timers if t.key is not None]
        if keyed:
            taken = await self._read(_PENDING_KEYS, (encode_rows(keyed),))
            if taken:
                raise TimerKeyTaken(str(taken[0][0]))

    async def _claim_taken(self, api_key_id: str, key: str) -> bool:
        rows = await self._read(
            "SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND key = ?", (api_key_id, key)
        )
        return bool(rows)

    async def _by_ids(self, ids: Sequence[str], owner: str | None = None) -> list[Timer]:
        sql = f"SELECT {_COLUMNS} FROM timers WHERE id IN (SELECT value FROM json_each(?))"
        params: tuple[Any, ...] = (json.dumps(list(ids)),)
        if owner is not None:
            sql += " AND owner = ?"
            params += (owner,)
        found = {row[0]: timer_row(row) for row in await self._read(sql, params)}
        return [found[tid] for tid in ids if tid in found]

    async def due_timers(self, *, limit: int) -> list[Timer]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM timers WHERE state = 'pending' AND due_at <= ?"
            " ORDER BY due_at, id LIMIT ?",
            (self._now_stamp(), limit),
        )
        return [timer_row(row) for row in rows]

    async def next_due_at(self) -> datetime | None:
        rows = await self._read("SELECT min(due_at) FROM timers WHERE state = 'pending'", ())
        return parse_timestamp(rows[0][0]) if rows and rows[0][0] else None

    async def get_timers(self, owner: str, timer_ids: Sequence[str]) -> list[Timer]:
        return await self._by_ids(timer_ids, owner)

    async def pending_timers(self, owner: str, kind: str, *, after_id: str | None, limit: int) -> list[Timer]:
        sql = f"SELECT {_COLUMNS} FROM timers WHERE owner = ? AND kind = ? AND state = 'pending'"
        params: tuple[Any, ...] = (owner, kind)
        if after_id is not None:
            sql += " AND (due_at, id) > (SELECT due_at, id FROM timers WHERE id = ? AND owner = ?)"
            params += (after_id, owner)
        rows = await self._read(f"{sql} ORDER BY due_at, id LIMIT ?", (*params, limit))
        return [timer_row(row) for row in rows]

    async def find_timer_by_key(self, owner: str, kind: str, key: str) -> Timer | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM timers WHERE owner = ? AND kind = ? AND key = ?"
            " ORDER BY state = 'pending' DESC, created_at DESC, id DESC LIMIT 1",
            (owner, kind, key),
        )
        return timer_row(rows[0]) if rows else None

    async def cancel_timer(self, owner: str, timer_id: str) -> bool:
        stamp = self._now_stamp()
        pending = "id = ? AND owner = ? AND state = 'pending'"
        changed = await self._execute_all(
            [
                # The claim first: a send of this job committed earlier has it (and has made the
                # job done); one committed later finds it taken and stores nothing.
                (
                    "INSERT OR IGNORE INTO idempotency_keys (api_key_id, key, request_hash,"
                    f" notification_ids, status, created_at) SELECT '{TIMER_CLAIMS}', id, '', '[]', 0, ?"
                    f" FROM timers WHERE {pending}",
                    [(stamp, timer_id, owner)],
                ),
                (
                    "UPDATE timers SET state = 'cancelled', finished_at = ?,"
                    f" payload = {_WITHOUT_CONTENT} WHERE {pending}",
                    [(stamp, timer_id, owner)],
                ),
            ]
        )
        return changed > 0

    async def retry_timer(self, timer_id: str, due_at: datetime | None) -> None:
        if due_at is None:
            await self._execute(
                "UPDATE timers SET attempts = attempts + 1, state = 'failed', finished_at = ?,"
                f" payload = {_WITHOUT_CONTENT} WHERE id = ? AND state = 'pending'",
                [(self._now_stamp(), timer_id)],
            )
            return
        await self._execute(
            "UPDATE timers SET attempts = attempts + 1, due_at = ? WHERE id = ? AND state = 'pending'",
            [(format_timestamp(due_at), timer_id)],
        )

    async def finish_timer(self, timer_id: str) -> bool:
        changed = await self._execute(
            "UPDATE timers SET state = 'done', finished_at = ?,"
            f" payload = {_WITHOUT_CONTENT} WHERE id = ? AND state = 'pending'",
            [(self._now_stamp(), timer_id)],
        )
        return changed > 0

    async def purge_finished_timers(self, older_than: timedelta) -> int:
        # By the finished jobs' index (migration 0010): reads only the rows it deletes.
        return await self._execute(
            "DELETE FROM timers WHERE rowid IN (SELECT rowid FROM timers"
            " WHERE state != 'pending' AND finished_at <= ? ORDER BY finished_at LIMIT ?)",
            [(format_timestamp(self._clock.now() - older_than), TIMER_PURGE_SLICE)],
        )
