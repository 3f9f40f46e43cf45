"""Web Push on PostgreSQL (`PushStore`): subscriptions, and the outbox's jobs finished with what the
push service answered.

A push job's effect is an HTTP call, so it cannot commit with it: the job is claimed (the
idempotency record ('timer', job id), whose trigger marks it done) in the transaction that records
the answer, and a job whose claim is taken is never run again, by any process. A send job is
taken by `due_timers` (its lease, `postgres.timers`) and then leased for as long as a push may
take (`lease_push`: its `leased_until`, its due time kept); a process that dies meanwhile leaves it
to be sent when that lease ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from diagnoxix.models import format_timestamp, new_ids, parse_timestamp
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.postgres.digests import join_timers
from diagnoxix.store.postgres.timers import changed, claim_job, insert_timers, timer_rows
from diagnoxix.store.protocols import IdempotencyConflict, StoreError
from diagnoxix.store.push_records import NewPushSubscription, PushAttempt, PushSubscription
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer

_COLUMNS = "id, user_id, endpoint, p256dh, auth, host, created_at, user_agent, last_status, last_sent_at"
# Registrations of one user take this transaction lock (with the user's hash), so the per-user
# limit holds when two processes register for one user at once.
_SUBSCRIBING = 0x7075_7368  # "push"
_REGISTER = (
    f"INSERT INTO push_subscriptions ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)"
    " ON CONFLICT (endpoint) DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth,"
    " user_agent = coalesce(excluded.user_agent, push_subscriptions.user_agent),"
    " created_at = CASE WHEN push_subscriptions.user_id = excluded.user_id"
    " THEN push_subscriptions.created_at ELSE excluded.created_at END,"
    " id = CASE WHEN push_subscriptions.user_id = excluded.user_id"
    " THEN push_subscriptions.id ELSE excluded.id END,"
    " user_id = excluded.user_id"
)
# The user's oldest beyond the limit, never the one just registered: processes commit
# registrations in any order, so one made a moment earlier may commit after a newer one.
_BEYOND_LIMIT = (
    "DELETE FROM push_subscriptions WHERE user_id = $1 AND endpoint <> $3 AND id NOT IN (SELECT id FROM"
    " push_subscriptions WHERE user_id = $1 AND endpoint <> $3 ORDER BY created_at DESC, id DESC"
    " LIMIT greatest($2::integer - 1, 0))"
)
_ATTEMPT = (
    "INSERT INTO push_attempts (notification_id, subscription_id, host, status, outcome, at, topic)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_LAST_ANSWER = "UPDATE push_subscriptions SET last_status = $1, last_sent_at = $2 WHERE id = $3"
# Answers deleted per statement: the writer is never held long.
ATTEMPT_PURGE_SLICE = 1000


def _subscription(row: Any) -> PushSubscription:
    sid, user_id, endpoint, p256dh, auth, host, created, agent, status, sent = row
    return PushSubscription(
        id=sid,
        user_id=user_id,
        endpoint=endpoint,
        p256dh=p256dh,
        auth=auth,
        host=host,
        created_at=parse_timestamp(created),
        user_agent=agent,
        last_status=status,
        last_sent_at=parse_timestamp(sent) if sent else None,
    )


async def _answer(conn: Any, attempt: PushAttempt, stamp: str, remove: bool) -> None:
    """Record what the push service answered, and on the subscription (or remove it: gone)."""
    sid = attempt.subscription_id
    await conn.execute(
        _ATTEMPT,
        attempt.notification_id,
        sid,
        attempt.host,
        attempt.status,
        attempt.outcome,
        stamp,
        attempt.topic,
    )
    if remove:
        await conn.execute("DELETE FROM push_subscriptions WHERE id = $1", sid)
    else:
        await conn.execute(_LAST_ANSWER, attempt.status, stamp, sid)


class PgPushQueries(PgAccess):
    """Push subscriptions and the push outbox (`PushStore`) on PostgreSQL."""

    async def add_push_subscription(self, new: NewPushSubscription, *, limit: int) -> PushSubscription:
        now = self._clock.now()
        stamp = format_timestamp(now)
        (sid,) = new_ids(1, int(now.timestamp() * 1000))

        async def register(tx: WriteTx) -> Any:
            conn = tx.conn
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _SUBSCRIBING, new.user_id)
            await conn.execute(
                _REGISTER,
                sid,
                new.user_id,
                new.endpoint,
                new.p256dh,
                new.auth,
                new.host,
                stamp,
                new.user_agent,
            )
            await conn.execute(_BEYOND_LIMIT, new.user_id, limit, new.endpoint)
            return await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM push_subscriptions WHERE endpoint = $1", new.endpoint
            )

        return _subscription(await self._write(register))

    async def list_push_subscriptions(self, user_id: str) -> list[PushSubscription]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
            user_id,
        )
        return [_subscription(row) for row in rows]

    async def push_subscriptions_of(self, user_ids: Sequence[str]) -> dict[str, list[PushSubscription]]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = ANY($1::text[])"
            " ORDER BY user_id, created_at DESC, id DESC",
            list(user_ids),
        )
        found: dict[str, list[PushSubscription]] = {}
        for row in rows:
            sub = _subscription(row)
            found.setdefault(sub.user_id, []).append(sub)
        return found

    async def get_push_subscription(self, subscription_id: str) -> PushSubscription | None:
        row = await self._fetchrow(
            f"SELECT {_COLUMNS} FROM push_subscriptions WHERE id = $1", subscription_id
        )
        return _subscription(row) if row is not None else None

    async def delete_push_subscription(self, user_id: str, subscription_id: str) -> bool:
        async def delete(tx: WriteTx) -> bool:
            status = await tx.conn.execute(
                "DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2", subscription_id, user_id
            )
            return changed(status) > 0

        return await self._write(delete)

    async def push_subscribed_users(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT user_id FROM push_subscriptions")
        return [str(row[0]) for row in rows]

    def queue_push_jobs(self, jobs: Sequence[NewTimer], on_written: Callable[[int], None]) -> None:
        _, columns = timer_rows(jobs, self._clock.now())
        count = len(jobs)

        async def queue(tx: WriteTx) -> None:
            await insert_timers(tx.conn, columns)
            tx.after_commit(lambda: on_written(count))

        self._write_nowait(queue)

    async def route_push(
        self, job_id: str, sends: Sequence[NewTimer], joins: Sequence[NewTimer] = ()
    ) -> None:
        now = self._clock.now()
        ids, columns = timer_rows(sends, now)
        ids_json = json.dumps(ids)
        stamp = format_timestamp(now)

        async def route(tx: WriteTx) -> bool:
            if not await claim_job(tx.conn, job_id, ids_json, stamp):
                return False
            await insert_timers(tx.conn, columns)
            await join_timers(tx.conn, joins, now)
            return True

        await self._claiming(job_id, route)

    async def lease_push(self, job_id: str, until: datetime) -> None:
        due = format_timestamp(until)

        async def lease(tx: WriteTx) -> None:
            await tx.conn.execute(
                "UPDATE timers SET leased_until = $1 WHERE id = $2 AND state = 'pending'", due, job_id
            )

        await self._write(lease)

    async def finish_push(
        self, job_id: str, attempt: PushAttempt | None, *, remove_subscription: bool = False
    ) -> None:
        stamp = self._now_stamp()

        async def finish(tx: WriteTx) -> bool:
            if not await claim_job(tx.conn, job_id, "[]", stamp):
                return False
            if attempt is not None:
                await _answer(tx.conn, attempt, stamp, remove_subscription)
            return True

        await self._claiming(job_id, finish)

    async def retry_push(self, job_id: str, attempt: PushAttempt, due_at: datetime | None) -> None:
        stamp = self._now_stamp()
        pending = "WHERE id = $2 AND state = 'pending'"
        if due_at is None:
            sql = "UPDATE timers SET attempts = attempts + 1, state = 'failed', finished_at = $1 " + pending
            value = stamp
        else:
            sql = "UPDATE timers SET attempts = attempts + 1, due_at = $1, leased_until = NULL " + pending
            value = format_timestamp(due_at)

        async def retry(tx: WriteTx) -> None:
            await _answer(tx.conn, attempt, stamp, False)
            await tx.conn.execute(sql, value, job_id)

        await self._write(retry)

    async def _claiming(self, job_id: str, work: Callable[[WriteTx], Any]) -> None:
        """Run a write that claims `job_id` first (False: its claim was taken)."""
        try:
            claimed = await self._write(work)
        except StoreError:
            if await self._fetchval(
                "SELECT 1 FROM idempotency_keys WHERE api_key_id = $1 AND key = $2", TIMER_CLAIMS, job_id
            ):
                raise IdempotencyConflict("this push job was finished already") from None
            raise
        if not claimed:
            raise IdempotencyConflict("this push job was finished already")

    async def push_attempts(self, notification_ids: Sequence[str]) -> dict[str, list[PushAttempt]]:
        rows = await self._fetch(
            "SELECT notification_id, subscription_id, host, status, outcome, at, topic FROM push_attempts"
            " WHERE notification_id = ANY($1::text[]) ORDER BY notification_id, id",
            list(notification_ids),
        )
        found: dict[str, list[PushAttempt]] = {}
        for nid, sid, host, status, outcome, at, topic in rows:
            found.setdefault(nid, []).append(
                PushAttempt(nid, sid, host, int(status), outcome, parse_timestamp(at), topic)
            )
        return found

    async def purge_push_attempts(self, older_than: timedelta) -> int:
        before = format_timestamp(self._clock.now() - older_than)

        async def purge(tx: WriteTx) -> int:
            status = await tx.conn.execute(
                "DELETE FROM push_attempts WHERE id IN (SELECT id FROM push_attempts WHERE at <= $1"
                " ORDER BY at LIMIT $2)",
                before,
                ATTEMPT_PURGE_SLICE,
            )
            return changed(status)

        return await self._write(purge)
