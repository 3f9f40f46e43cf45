"""Web Push in the embedded store (`PushStore`): subscriptions, and the outbox's jobs finished
with what the push service answered.

A mixin of `SqliteStore`, kept apart so each module holds one concern. A push job's effect is an
HTTP call, so it cannot commit with it: the job is claimed (the idempotency record ('timer', job
id), whose trigger of migration 0008 marks it done) in the transaction that records the answer,
and a job whose claim is taken is never run again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from diagnoxix.json_encoding import encode_json, encode_rows
from diagnoxix.models import format_timestamp, new_ids, parse_timestamp
from diagnoxix.store.protocols import IdempotencyConflict, StoreError
from diagnoxix.store.push_records import NewPushSubscription, PushAttempt, PushSubscription
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.digests import join_timers
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer

_COLUMNS = "id, user_id, endpoint, p256dh, auth, host, created_at, user_agent, last_status, last_sent_at"
# Claims the job: the trigger marks it done in the same transaction; a second claim fails.
_CLAIM = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
    f" created_at) VALUES ('{TIMER_CLAIMS}', ?, '', ?, 201, ?)"
)
_ATTEMPT = (
    "INSERT INTO push_attempts (notification_id, subscription_id, host, status, outcome, at, topic)"
    " VALUES (?,?,?,?,?,?,?)"
)
_INSERT_TIMERS = (
    "INSERT INTO timers (id, kind, owner, key, due_at, payload, created_at) SELECT value->>0, value->>1,"
    " value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?)"
)
_LAST_ANSWER = "UPDATE push_subscriptions SET last_status = ?, last_sent_at = ? WHERE id = ?"
# Answers deleted per statement: the writer is never held long.
ATTEMPT_PURGE_SLICE = 1000


def _subscription(row: tuple[Any, ...]) -> PushSubscription:
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


class PushQueries(SqliteAccess):
    """Push subscriptions and the push outbox (`PushStore`), on the store's primitives."""

    async def add_push_subscription(self, new: NewPushSubscription, *, limit: int) -> PushSubscription:
        now = self._clock.now()
        stamp = format_timestamp(now)
        (sid,) = new_ids(1, int(now.timestamp() * 1000))
        await self._execute_all(
            [
                (
                    f"INSERT INTO push_subscriptions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,NULL,NULL)"
                    " ON CONFLICT (endpoint) DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth,"
                    " user_agent = coalesce(excluded.user_agent, push_subscriptions.user_agent),"
                    " created_at = iif(push_subscriptions.user_id = excluded.user_id,"
                    " push_subscriptions.created_at, excluded.created_at),"
                    " id = iif(push_subscriptions.user_id = excluded.user_id, push_subscriptions.id,"
                    " excluded.id), user_id = excluded.user_id",
                    [(sid, new.user_id, new.endpoint, new.p256dh, new.auth, new.host, stamp, new.user_agent)],
                ),
                (
                    "DELETE FROM push_subscriptions WHERE user_id = ? AND id NOT IN (SELECT id FROM"
                    " push_subscriptions WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?)",
                    [(new.user_id, new.user_id, limit)],
                ),
            ]
        )
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM push_subscriptions WHERE endpoint = ?", (new.endpoint,)
        )
        if not rows:  # removed by a concurrent registration past the limit
            raise StoreError("the subscription was replaced meanwhile")
        return _subscription(rows[0])

    async def list_push_subscriptions(self, user_id: str) -> list[PushSubscription]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = ? ORDER BY created_at DESC, id DESC",
            (user_id,),
        )
        return [_subscription(row) for row in rows]

    async def push_subscriptions_of(self, user_ids: Sequence[str]) -> dict[str, list[PushSubscription]]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id IN (SELECT value FROM json_each(?))"
            " ORDER BY user_id, created_at DESC, id DESC",
            (json.dumps(list(user_ids)),),
        )
        found: dict[str, list[PushSubscription]] = {}
        for row in rows:
            sub = _subscription(row)
            found.setdefault(sub.user_id, []).append(sub)
        return found

    async def get_push_subscription(self, subscription_id: str) -> PushSubscription | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM push_subscriptions WHERE id = ?", (subscription_id,))
        return _subscription(rows[0]) if rows else None

    async def delete_push_subscription(self, user_id: str, subscription_id: str) -> bool:
        changed = await self._execute(
            "DELETE FROM push_subscriptions WHERE id = ? AND user_id = ?", [(subscription_id, user_id)]
        )
        return changed > 0

    async def push_subscribed_users(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT user_id FROM push_subscriptions", ())
        return [str(row[0]) for row in rows]

    def queue_push_jobs(self, jobs: Sequence[NewTimer], on_written: Callable[[int], None]) -> None:
        now = self._clock.now()
        stamp = format_timestamp(now)
        ids = new_ids(len(jobs), int(now.timestamp() * 1000))
        self._execute_nowait(
            _INSERT_TIMERS,
            [
                [tid, t.kind, t.owner, t.key, format_timestamp(t.due_at), encode_json(t.payload), stamp]
                for tid, t in zip(ids, jobs, strict=True)
            ],
            on_written,
        )

    async def route_push(
        self, job_id: str, sends: Sequence[NewTimer], joins: Sequence[NewTimer] = ()
    ) -> None:
        now = self._clock.now()
        stamp = format_timestamp(now)
        ids = new_ids(len(sends), int(now.timestamp() * 1000))
        statements: list[tuple[str, list[tuple[Any, ...]]]] = [(_CLAIM, [(job_id, json.dumps(ids), stamp)])]
        if sends:
            rows = [
                [tid, t.kind, t.owner, t.key, format_timestamp(t.due_at), encode_json(t.payload), stamp]
                for tid, t in zip(ids, sends, strict=True)
            ]
            statements.append((_INSERT_TIMERS, [(encode_rows(rows),)]))
        if joins:
            statements.append(join_timers(joins, now))
        await self._claiming(job_id, statements)

    async def lease_push(self, job_id: str, until: datetime) -> None:
        await self._execute(
            "UPDATE timers SET due_at = ? WHERE id = ? AND state = 'pending'",
            [(format_timestamp(until), job_id)],
        )

    async def finish_push(
        self, job_id: str, attempt: PushAttempt | None, *, remove_subscription: bool = False
    ) -> None:
        stamp = self._now_stamp()
        statements: list[tuple[str, list[tuple[Any, ...]]]] = [(_CLAIM, [(job_id, "[]", stamp)])]
        if attempt is not None:
            statements.extend(self._answer(attempt, stamp, remove_subscription))
        await self._claiming(job_id, statements)

    async def retry_push(self, job_id: str, attempt: PushAttempt, due_at: datetime | None) -> None:
        stamp = self._now_stamp()
        statements = self._answer(attempt, stamp, False)
        pending = "WHERE id = ? AND state = 'pending'"
        if due_at is None:
            statements.append(
                (
                    "UPDATE timers SET attempts = attempts + 1, state = 'failed', finished_at = ? " + pending,
                    [(stamp, job_id)],
                )
            )
        else:
            statements.append(
                (
                    "UPDATE timers SET attempts = attempts + 1, due_at = ? " + pending,
                    [(format_timestamp(due_at), job_id)],
                )
            )
        await self._execute_all(statements)

    def _answer(
        self, attempt: PushAttempt, stamp: str, remove: bool
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        sid = attempt.subscription_id
        row = (
            attempt.notification_id,
            sid,
            attempt.host,
            attempt.status,
            attempt.outcome,
            stamp,
            attempt.topic,
        )
        last: tuple[str, list[tuple[Any, ...]]] = (
            ("DELETE FROM push_subscriptions WHERE id = ?", [(sid,)])
            if remove
            else (_LAST_ANSWER, [(attempt.status, stamp, sid)])
        )
        return [(_ATTEMPT, [row]), last]

    async def _claiming(self, job_id: str, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        try:
            await self._execute_all(statements)
        except StoreError:
            rows = await self._read(
                "SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND key = ?", (TIMER_CLAIMS, job_id)
            )
            if rows:
                raise IdempotencyConflict("this push job was finished already") from None
            raise

    async def push_attempts(self, notification_ids: Sequence[str]) -> dict[str, list[PushAttempt]]:
        rows = await self._read(
            "SELECT notification_id, subscription_id, host, status, outcome, at, topic FROM push_attempts"
            " WHERE notification_id IN (SELECT value FROM json_each(?)) ORDER BY notification_id, id",
            (json.dumps(list(notification_ids)),),
        )
        found: dict[str, list[PushAttempt]] = {}
        for nid, sid, host, status, outcome, at, topic in rows:
            found.setdefault(nid, []).append(
                PushAttempt(nid, sid, host, int(status), outcome, parse_timestamp(at), topic)
            )
        return found

    async def purge_push_attempts(self, older_than: timedelta) -> int:
        return await self._execute(
            "DELETE FROM push_attempts WHERE id IN (SELECT id FROM push_attempts WHERE at <= ?"
            " ORDER BY at LIMIT ?)",
            [(format_timestamp(self._clock.now() - older_than), ATTEMPT_PURGE_SLICE)],
        )
