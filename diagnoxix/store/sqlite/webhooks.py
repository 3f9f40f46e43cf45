"""Outgoing webhooks in the embedded store (`WebhookStore`): endpoints, the deliveries' outbox.

A mixin of `SqliteStore`. Deliveries and the rules' checks are durable timers (`timers`, see
`store.sqlite.timers`); what is particular to webhooks is here: their endpoints, enqueueing with
the rules' cursor (so a rule is applied to each notification once, even across a kill -9), a
failed attempt that keeps its error, and dead letters that staff can send again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from diagnoxix.models import BROADCAST_RECIPIENT, Notification, format_timestamp, new_ids, parse_timestamp
from diagnoxix.store.protocols import IdempotencyConflict, StoreError
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.batch import NOTIFICATION_COLUMNS
from diagnoxix.store.sqlite.digests import join_timers
from diagnoxix.store.sqlite.rows import LIVE, row_to_notification
from diagnoxix.store.sqlite.timers import insert_timers, timer_row, timer_rows
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer, Timer
from diagnoxix.store.webhook_records import WEBHOOK_DELIVERY, WEBHOOK_RULES_CURSOR, WebhookEndpoint

_ENDPOINT_COLUMNS = "id, url, secret, events, description, enabled, created_at, created_by"
_TIMER_COLUMNS = "id, kind, owner, key, due_at, payload, state, attempts, created_at, finished_at, result"
_DEAD = f"kind = '{WEBHOOK_DELIVERY}' AND state = 'failed'"
# The cursor only moves up: batches commit in order, but a nowait note may land after an awaited one.
_CURSOR = (
    f"INSERT INTO meta (key, value) VALUES ('{WEBHOOK_RULES_CURSOR}', ?) ON CONFLICT (key) DO UPDATE"
    " SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))"
)


def _endpoint(row: tuple[Any, ...]) -> WebhookEndpoint:
    eid, url, secret, events, description, enabled, created, created_by = row
    return WebhookEndpoint(
        id=eid,
        url=url,
        secret=secret,
        events=tuple(json.loads(events)),
        description=description,
        enabled=bool(enabled),
        created_at=parse_timestamp(created),
        created_by=created_by,
    )


class WebhookQueries(SqliteAccess):
    """`WebhookStore` on the store's primitives (`SqliteAccess`)."""

    async def create_webhook_endpoint(
        self, url: str, secret: str, events: Sequence[str], description: str, created_by: str
    ) -> WebhookEndpoint:
        now = self._clock.now()
        eid = new_ids(1, int(now.timestamp() * 1000))[0]
        await self._execute(
            f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) VALUES (?,?,?,?,?,1,?,?)",
            [(eid, url, secret, json.dumps(list(events)), description, format_timestamp(now), created_by)],
        )
        return WebhookEndpoint(eid, url, secret, tuple(events), description, True, now, created_by)

    async def webhook_endpoints(self) -> list[WebhookEndpoint]:
        sql = f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
        rows = await self._read(sql, ())
        return [_endpoint(row) for row in rows]

    async def set_webhook_endpoint_enabled(self, endpoint_id: str, enabled: bool) -> bool:
        changed = await self._execute(
            "UPDATE webhook_endpoints SET enabled = ? WHERE id = ?", [(int(enabled), endpoint_id)]
        )
        return changed > 0

    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        return await self._execute("DELETE FROM webhook_endpoints WHERE id = ?", [(endpoint_id,)]) > 0

    async def enqueue_webhooks(
        self,
        timers: Sequence[NewTimer],
        *,
        through_seq: int | None = None,
        claim_timer: str | None = None,
        joins: Sequence[NewTimer] = (),
    ) -> list[str]:
        now = self._clock.now()
        ids, rows = timer_rows(timers, now)
        statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        if claim_timer is not None:
            # The claim's trigger (migration 0008) marks the job done in this transaction.
            statements.append(
                (
                    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids,"
                    " status, created_at) VALUES (?,?,'','[]',201,?)",
                    [(TIMER_CLAIMS, claim_timer, format_timestamp(now))],
                )
            )
        if rows:
            statements.append(insert_timers(rows))
        if joins:
            statements.append(join_timers(joins, now))
        if through_seq is not None:
            statements.append((_CURSOR, [(str(through_seq),)]))
        if not statements:
            return []
        try:
            await self._execute_all(statements)
        except StoreError:
            if claim_timer is not None and await self._read(
                "SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND key = ?", (TIMER_CLAIMS, claim_timer)
            ):
                raise IdempotencyConflict("this job was run already") from None
            raise
        return ids

    def note_webhook_rules_through(self, seq: int) -> None:
        self._execute_nowait(
            f"INSERT INTO meta (key, value) SELECT '{WEBHOOK_RULES_CURSOR}', value->>0 FROM json_each(?)"
            " WHERE true ON CONFLICT (key) DO UPDATE"
            " SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            [[str(seq)]],
        )

    async def webhook_rules_cursor(self) -> int | None:
        rows = await self._read("SELECT value FROM meta WHERE key = ?", (WEBHOOK_RULES_CURSOR,))
        return int(rows[0][0]) if rows else None

    async def notifications_between(self, after_seq: int, upto_seq: int, *, limit: int) -> list[Notification]:
        rows = await self._read(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE seq > ? AND seq <= ?"
            f" AND user_id != ? AND {LIVE} ORDER BY seq LIMIT ?",
            (after_seq, upto_seq, BROADCAST_RECIPIENT, self._now_stamp(), limit),
        )
        return [row_to_notification(row) for row in rows]

    async def webhook_attempt_failed(self, timer_id: str, due_at: datetime | None, error: str) -> None:
        stamp = self._now_stamp()
        noted = "json_set(payload, '$.last_error', ?, '$.last_attempt_at', ?)"
        if due_at is None:
            await self._execute(
                "UPDATE timers SET attempts = attempts + 1, state = 'failed', finished_at = ?,"
                f" payload = {noted}"
                " WHERE id = ? AND state = 'pending'",
                [(stamp, error, stamp, timer_id)],
            )
            return
        await self._execute(
            f"UPDATE timers SET attempts = attempts + 1, due_at = ?, payload = {noted}"
            " WHERE id = ? AND state = 'pending'",
            [(format_timestamp(due_at), error, stamp, timer_id)],
        )

    async def webhook_deliveries_of(self, notification_ids: Sequence[str]) -> dict[str, list[Timer]]:
        found: dict[str, list[Timer]] = {}
        if not notification_ids:
            return found
        # By migration 0016's index: the expression is written as the index has it.
        rows = await self._read(
            f"SELECT {_TIMER_COLUMNS} FROM timers WHERE kind = '{WEBHOOK_DELIVERY}'"
            " AND json_extract(payload, '$.notification_id') IN (SELECT value FROM json_each(?))"
            " ORDER BY created_at, id",
            (json.dumps(list(notification_ids)),),
        )
        for row in rows:
            job = timer_row(row)
            found.setdefault(str(job.payload["notification_id"]), []).append(job)
        return found

    async def dead_webhooks(self, *, limit: int) -> list[Timer]:
        rows = await self._read(
            f"SELECT {_TIMER_COLUMNS} FROM timers WHERE {_DEAD} ORDER BY finished_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [timer_row(row) for row in rows]

    async def count_dead_webhooks(self) -> int:
        rows = await self._read(f"SELECT count(*) FROM timers WHERE {_DEAD}", ())
        return int(rows[0][0])

    async def revive_dead_webhook(self, timer_id: str, actor: str) -> bool:
        stamp = self._now_stamp()
        changed = await self._execute(
            "UPDATE timers SET state = 'pending', due_at = ?, attempts = 0, finished_at = NULL,"
            " payload = json_set(payload, '$.since', ?, '$.revived_by', ?)"
            f" WHERE id = ? AND {_DEAD} AND payload->'$.content' IS NOT NULL",
            [(stamp, stamp, actor, timer_id)],
        )
        return changed > 0
