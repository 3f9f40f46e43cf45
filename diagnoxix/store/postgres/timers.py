"""Durable timers on PostgreSQL (`TimerStore`): jobs due at a time, in `timers`, shared by every
process of a deployment.

Exactly once, as on SQLite: a job's effect and its completion commit together. Its notifications
are stored with the idempotency claim ('timer', job id), whose trigger (migration `jobs`) marks the
job done in that transaction; a cancellation inserts the same claim (status 0) in the transaction
that marks the job cancelled. The claim's primary key decides between processes: the second
insert waits for the first transaction, then conflicts, and stores nothing.

The lease. Every process runs the timer loop over the one database, so `due_timers` claims what
it returns: in one statement it picks due jobs `FOR UPDATE SKIP LOCKED` (another process's
concurrent pick skips them) and sets their `leased_until` to now + the lease (`TimerLeases`), so
every other process sees them not due until the lease ends. `due_at` stays the job's own time
(`GET /v1/scheduled` shows it, leased or not); a job is due once both have passed. The jobs come
back as stored, their attempts untouched. A handler then finishes its job (the claim above,
`finish_timer`, `cancel_timer`), reschedules it (`retry_timer`, a webhook's failed attempt: a new
due time, no lease) or leases it for as long as its own call may take (`lease_push`). A process
that dies mid-job leaves it pending and due when its lease ends, as a restart runs it on SQLite;
the next scheduler to read what is due runs it (each sleeps until the soonest due time it read,
or until woken), and its claim still stores its effect once.

A lease outlasts what its job can take, so no other process runs a job while its handler still
does: a webhook delivery waits on its receiver up to `DIAGNOXIX_WEBHOOK_TIMEOUT`, and its lease is
that plus `LEASE_MARGIN` (at least `TIMER_LEASE`); every other job only reads and writes the
database (a push leases itself for its own timeout, `lease_push`), and gets `TIMER_LEASE`, so a job
a dead process held is late by at most that much.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from diagnoxix.json_encoding import encode_json
from diagnoxix.models import format_timestamp, new_ids, parse_timestamp
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.protocols import IdempotencyClaim, IdempotencyConflict, StoreError, TimerKeyTaken
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer, Timer
from diagnoxix.store.webhook_records import WEBHOOK_DELIVERY

# The shortest lease: how long a job `due_timers` returned is not due for any other process, unless
# it may take longer (`TimerLeases`). Short enough that a job a dead process held is not late by
# much.
TIMER_LEASE = timedelta(minutes=2)
# A lease outlasts the longest outgoing call of its job by this much: what the job does besides
# (a read before, its final write after, the database busy) and clocks of several machines apart.
LEASE_MARGIN = timedelta(minutes=1)
# Finished jobs deleted per statement: the writer is never held long.
TIMER_PURGE_SLICE = 1000

TIMER_COLUMNS = "id, kind, owner, key, due_at, payload, state, attempts, created_at, finished_at, result"
# A job that has run, was cancelled or failed keeps no content.
WITHOUT_CONTENT = "json_text_without(payload, 'content')"
_INSERT = (
    "INSERT INTO timers (id, kind, owner, key, due_at, payload, created_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::text[])"
)
_PENDING_KEYS = (
    "SELECT t.key FROM timers AS t JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(owner, kind, key)"
    " ON t.owner = k.owner AND t.kind = k.kind AND t.key = k.key WHERE t.state = 'pending'"
)
_CLAIM = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
)
# Picks due jobs no other transaction holds and no lease holds, and leases them: a webhook
# delivery until $4, any other job until $3.
_CLAIM_DUE = (
    "WITH due AS (SELECT id FROM timers WHERE state = 'pending' AND due_at <= $1"
    " AND (leased_until IS NULL OR leased_until <= $1) ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)"
    f" UPDATE timers AS t SET leased_until = CASE WHEN t.kind = '{WEBHOOK_DELIVERY}' THEN $4 ELSE $3 END"
    " FROM due WHERE t.id = due.id RETURNING t.id, t.kind, t.owner, t.key, t.due_at, t.payload, t.state,"
    " t.attempts, t.created_at, t.finished_at, t.result"
)
# When the soonest pending job is due: its due time, or its lease's end while one holds it (a lease
# always ends after the due time it was taken at). Each part by its own index.
_NEXT_DUE = (
    "SELECT least((SELECT min(due_at) FROM timers WHERE state = 'pending' AND leased_until IS NULL),"
    " (SELECT min(leased_until) FROM timers WHERE state = 'pending' AND leased_until IS NOT NULL))"
)


@dataclass(frozen=True, slots=True)
class TimerLeases:
    """How long a job `due_timers` returned is held from every other process, by kind: longer than
    its handler can run (the module's doc)."""

    default: timedelta = TIMER_LEASE
    webhook: timedelta = TIMER_LEASE

    @classmethod
    def for_webhook_timeout(cls, seconds: float) -> TimerLeases:
        """The leases for the configured `DIAGNOXIX_WEBHOOK_TIMEOUT`: a delivery's outlasts it by
        `LEASE_MARGIN`, however long it is."""
        return cls(webhook=max(TIMER_LEASE, timedelta(seconds=seconds) + LEASE_MARGIN))


def timer_rows(timers: Sequence[NewTimer], now: datetime) -> tuple[list[str], list[list[Any]]]:
    """New ids for `timers` and their rows (columns of `insert_timers`), one list per column."""
    stamp = format_timestamp(now)
    ids = new_ids(len(timers), int(now.timestamp() * 1000))
    columns: list[list[Any]] = [list(ids), [], [], [], [], [], [stamp] * len(timers)]
    for t in timers:
        columns[1].append(t.kind)
        columns[2].append(t.owner)
        columns[3].append(t.key)
        columns[4].append(format_timestamp(t.due_at))
        columns[5].append(encode_json(t.payload))
    return ids, columns


async def insert_timers(conn: Any, columns: list[list[Any]]) -> None:
    """Insert the jobs of `timer_rows` in one statement."""
    if columns[0]:
        await conn.execute(_INSERT, *columns)


async def claim_job(conn: Any, job_id: str, notification_ids: str, stamp: str) -> bool:
    """Claim a job ('timer', its id, status 201: its trigger marks it done); False when its claim
    was taken (by another attempt, or a cancellation)."""
    status = await conn.execute(_CLAIM, TIMER_CLAIMS, job_id, "", notification_ids, 201, stamp)
    return changed(status) > 0


def changed(status: str) -> int:
    """The rows a statement changed, from its status ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    return int(status.rsplit(" ", 1)[-1])


def timer_row(row: Any) -> Timer:
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


class PgTimerQueries(PgAccess):
    """Durable timers (`TimerStore`) on PostgreSQL."""

    # Set by `PgCore`: the leases `due_timers` takes.
    _leases: TimerLeases

    async def add_timers(
        self, timers: Sequence[NewTimer], idempotency: IdempotencyClaim | None = None
    ) -> list[Timer]:
        now = self._clock.now()
        stamp = format_timestamp(now)
        ids, columns = timer_rows(timers, now)
        await self._refuse_taken_keys(timers)

        async def add(tx: WriteTx) -> list[Any] | None:
            conn = tx.conn
            if idempotency is not None:
                claim = idempotency
                status = await conn.execute(
                    _CLAIM,
                    claim.api_key_id,
                    claim.key,
                    claim.request_hash,
                    json.dumps(ids),
                    claim.status,
                    stamp,
                )
                if not changed(status):
                    return None
            await insert_timers(conn, columns)
            rows: list[Any] = await conn.fetch(
                f"SELECT {TIMER_COLUMNS} FROM timers WHERE id = ANY($1::text[])", ids
            )
            return rows

        try:
            rows = await self._write(add)
        except StoreError:
            # Refused: by a request racing this one with the same claim or the same key (checked
            # above, so only a race gets here), or by the database itself.
            if idempotency is not None and await self._fetchval(
                "SELECT 1 FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
                idempotency.api_key_id,
                idempotency.key,
            ):
                raise IdempotencyConflict("this Idempotency-Key was already used") from None
            await self._refuse_taken_keys(timers)
            raise
        if rows is None:
            raise IdempotencyConflict("this Idempotency-Key was already used")
        found = {row[0]: timer_row(row) for row in rows}
        return [found[tid] for tid in ids if tid in found]

    async def _refuse_taken_keys(self, timers: Sequence[NewTimer]) -> None:
        keyed = [t for t in timers if t.key is not None]
        if keyed:
            taken = await self._fetch(
                _PENDING_KEYS, [t.owner for t in keyed], [t.kind for t in keyed], [t.key for t in keyed]
            )
            if taken:
                raise TimerKeyTaken(str(taken[0][0]))

    async def _by_ids(self, ids: Sequence[str], owner: str | None = None) -> list[Timer]:
        sql = f"SELECT {TIMER_COLUMNS} FROM timers WHERE id = ANY($1::text[])"
        args: list[Any] = [list(ids)]
        if owner is not None:
            sql += " AND owner = $2"
            args.append(owner)
        found = {row[0]: timer_row(row) for row in await self._fetch(sql, *args)}
        return [found[tid] for tid in ids if tid in found]

    async def due_timers(self, *, limit: int) -> list[Timer]:
        """Claims what it returns: see the module's doc (the lease)."""
        now = self._clock.now()
        ends = (format_timestamp(now + self._leases.default), format_timestamp(now + self._leases.webhook))

        async def claim(tx: WriteTx) -> list[Any]:
            rows: list[Any] = await tx.conn.fetch(_CLAIM_DUE, format_timestamp(now), limit, *ends)
            return rows

        jobs = [timer_row(row) for row in await self._write(claim)]
        return sorted(jobs, key=lambda job: (job.due_at, job.id))

    async def next_due_at(self) -> datetime | None:
        due = await self._fetchval(_NEXT_DUE)
        return parse_timestamp(due) if due else None

    async def get_timers(self, owner: str, timer_ids: Sequence[str]) -> list[Timer]:
        return await self._by_ids(timer_ids, owner)

    async def pending_timers(self, owner: str, kind: str, *, after_id: str | None, limit: int) -> list[Timer]:
        sql = f"SELECT {TIMER_COLUMNS} FROM timers WHERE owner = $1 AND kind = $2 AND state = 'pending'"
        args: list[Any] = [owner, kind]
        if after_id is not None:
            sql += " AND (due_at, id) > (SELECT due_at, id FROM timers WHERE id = $3 AND owner = $1)"
            args.append(after_id)
        rows = await self._fetch(f"{sql} ORDER BY due_at, id LIMIT ${len(args) + 1}", *args, limit)
        return [timer_row(row) for row in rows]

    async def find_timer_by_key(self, owner: str, kind: str, key: str) -> Timer | None:
        row = await self._fetchrow(
            f"SELECT {TIMER_COLUMNS} FROM timers WHERE owner = $1 AND kind = $2 AND key = $3"
            " ORDER BY state = 'pending' DESC, created_at DESC, id DESC LIMIT 1",
            owner,
            kind,
            key,
        )
        return timer_row(row) if row is not None else None

    async def cancel_timer(self, owner: str, timer_id: str) -> bool:
        stamp = self._now_stamp()
        pending = "id = $2 AND owner = $3 AND state = 'pending'"

        async def cancel(tx: WriteTx) -> bool:
            # The claim first: a run of this job committed earlier has it (and has made the job
            # done); one committing meanwhile makes this insert wait, then do nothing, and the
            # update below then finds the job done; one committing later finds it taken.
            await tx.conn.execute(
                "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
                f" created_at) SELECT '{TIMER_CLAIMS}', id, '', '[]', 0, $1 FROM timers WHERE {pending}"
                " ON CONFLICT DO NOTHING",
                stamp,
                timer_id,
                owner,
            )
            status = await tx.conn.execute(
                f"UPDATE timers SET state = 'cancelled', finished_at = $1, payload = {WITHOUT_CONTENT}"
                f" WHERE {pending}",
                stamp,
                timer_id,
                owner,
            )
            return changed(status) > 0

        return await self._write(cancel)

    async def retry_timer(self, timer_id: str, due_at: datetime | None) -> None:
        if due_at is None:
            sql = (
                "UPDATE timers SET attempts = attempts + 1, state = 'failed', finished_at = $1,"
                f" payload = {WITHOUT_CONTENT} WHERE id = $2 AND state = 'pending'"
            )
            value = self._now_stamp()
        else:
            sql = (
                "UPDATE timers SET attempts = attempts + 1, due_at = $1, leased_until = NULL"
                " WHERE id = $2 AND state = 'pending'"
            )
            value = format_timestamp(due_at)

        async def retry(tx: WriteTx) -> None:
            await tx.conn.execute(sql, value, timer_id)

        await self._write(retry)

    async def finish_timer(self, timer_id: str) -> bool:
        stamp = self._now_stamp()

        async def finish(tx: WriteTx) -> bool:
            status = await tx.conn.execute(
                f"UPDATE timers SET state = 'done', finished_at = $1, payload = {WITHOUT_CONTENT}"
                " WHERE id = $2 AND state = 'pending'",
                stamp,
                timer_id,
            )
            return changed(status) > 0

        return await self._write(finish)

    async def purge_finished_timers(self, older_than: timedelta) -> int:
        # By the finished jobs' index: reads only the rows it deletes.
        before = format_timestamp(self._clock.now() - older_than)

        async def purge(tx: WriteTx) -> int:
            status = await tx.conn.execute(
                "DELETE FROM timers WHERE id IN (SELECT id FROM timers"
                " WHERE state != 'pending' AND finished_at <= $1 ORDER BY finished_at LIMIT $2)",
                before,
                TIMER_PURGE_SLICE,
            )
            return changed(status)

        return await self._write(purge)
