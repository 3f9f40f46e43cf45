"""Outgoing webhooks on PostgreSQL (`WebhookStore`): endpoints, the deliveries' outbox.

Deliveries and the rules' checks are durable timers (`postgres.timers`, with their lease); what is
particular to webhooks is here: their endpoints, enqueueing with the rules' cursor (so a rule is
applied to each notification once, even across a kill -9), a failed attempt that keeps its error,
and dead letters that staff can send again. The cursor is one meta row that only moves up
(`greatest`), whichever process moves it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from diagnoxix.models import (
    BROADCAST_RECIPIENT,
    Links,
    Notification,
    format_timestamp,
    new_ids,
    parse_timestamp,
)
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.postgres.digests import join_timers
from diagnoxix.store.postgres.timers import (
    TIMER_COLUMNS,
    changed,
    claim_job,
    insert_timers,
    timer_row,
    timer_rows,
)
from diagnoxix.store.protocols import IdempotencyConflict, StoreError
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer, Timer
from diagnoxix.store.webhook_records import WEBHOOK_DELIVERY, WEBHOOK_RULES_CURSOR, WebhookEndpoint

_ENDPOINT_COLUMNS = "id, url, secret, events, description, enabled, created_at, created_by"
_NOTIFICATION_COLUMNS = (
    "seq, id, user_id, type, title, message, data, priority, created_at, delivered_at, read_at,"
    " expires_at, links"
)
_DEAD = f"kind = '{WEBHOOK_DELIVERY}' AND state = 'failed'"
# The cursor only moves up: a bookkeeping note may commit after an awaited move, in another process.
_CURSOR = (
    f"INSERT INTO meta (key, value) VALUES ('{WEBHOOK_RULES_CURSOR}', $1) ON CONFLICT (key) DO UPDATE"
    " SET value = greatest(meta.value::bigint, excluded.value::bigint)::text"
)
# What a failed attempt keeps in the delivery's payload (SQLite's json_set).
_NOTED = "json_text_set(payload, json_build_object('last_error', $3::text, 'last_attempt_at', $4::text))"


def _endpoint(row: Any) -> WebhookEndpoint:
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


def _notification(row: Any) -> Notification:
    seq, nid, user_id, kind, title, message, data, priority, created, delivered, read, expires, links = row
    return Notification(
        seq=int(seq),
        id=nid,
        user_id=user_id,
        type=kind,
        title=title,
        message=message,
        data=json.loads(data),
        priority=priority,
        created_at=parse_timestamp(created),
        delivered_at=parse_timestamp(delivered) if delivered else None,
        read_at=parse_timestamp(read) if read else None,
        expires_at=parse_timestamp(expires) if expires else None,
        links=Links.from_stored(links),
    )


class PgWebhookQueries(PgAccess):
    """`WebhookStore` on PostgreSQL."""

    async def create_webhook_endpoint(
        self, url: str, secret: str, events: Sequence[str], description: str, created_by: str
    ) -> WebhookEndpoint:
        now = self._clock.now()
        eid = new_ids(1, int(now.timestamp() * 1000))[0]
        row = (eid, url, secret, json.dumps(list(events)), description, format_timestamp(now), created_by)

        async def create(tx: WriteTx) -> None:
            await tx.conn.execute(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, 1, $6, $7)",
                *row,
            )

        await self._write(create)
        return WebhookEndpoint(eid, url, secret, tuple(events), description, True, now, created_by)

    async def webhook_endpoints(self) -> list[WebhookEndpoint]:
        rows = await self._fetch(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id")
        return [_endpoint(row) for row in rows]

    async def set_webhook_endpoint_enabled(self, endpoint_id: str, enabled: bool) -> bool:
        return await self._change(
            "UPDATE webhook_endpoints SET enabled = $1 WHERE id = $2", int(enabled), endpoint_id
        )

    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        return await self._change("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)

    async def _change(self, sql: str, *args: Any) -> bool:
        async def change(tx: WriteTx) -> bool:
            return changed(await tx.conn.execute(sql, *args)) > 0

        return await self._write(change)

    async def enqueue_webhooks(
        self,
        timers: Sequence[NewTimer],
        *,
        through_seq: int | None = None,
        claim_timer: str | None = None,
        joins: Sequence[NewTimer] = (),
    ) -> list[str]:
        if claim_timer is None and not timers and not joins and through_seq is None:
            return []
        now = self._clock.now()
        stamp = format_timestamp(now)
        ids, columns = timer_rows(timers, now)

        async def enqueue(tx: WriteTx) -> bool:
            conn = tx.conn
            # The claim's trigger marks the job done in this transaction.
            if claim_timer is not None and not await claim_job(conn, claim_timer, "[]", stamp):
                return False
            await insert_timers(conn, columns)
            await join_timers(conn, joins, now)
            if through_seq is not None:
                await conn.execute(_CURSOR, str(through_seq))
            return True

        try:
            enqueued = await self._write(enqueue)
        except StoreError:
            if claim_timer is not None and await self._fetchval(
                "SELECT 1 FROM idempotency_keys WHERE api_key_id = $1 AND key = $2", TIMER_CLAIMS, claim_timer
            ):
                raise IdempotencyConflict("this job was run already") from None
            raise
        if not enqueued:
            raise IdempotencyConflict("this job was run already")
        return ids

    def note_webhook_rules_through(self, seq: int) -> None:
        async def note(tx: WriteTx) -> None:
            await tx.conn.execute(_CURSOR, str(seq))

        self._write_nowait(note)

    async def webhook_rules_cursor(self) -> int | None:
        value = await self._fetchval("SELECT value FROM meta WHERE key = $1", WEBHOOK_RULES_CURSOR)
        return int(value) if value is not None else None

    async def notifications_between(self, after_seq: int, upto_seq: int, *, limit: int) -> list[Notification]:
        rows = await self._fetch(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE seq > $1 AND seq <= $2"
            " AND user_id != $3 AND (expires_at IS NULL OR expires_at > $4) ORDER BY seq LIMIT $5",
            after_seq,
            upto_seq,
            BROADCAST_RECIPIENT,
            self._now_stamp(),
            limit,
        )
        return [_notification(row) for row in rows]

    async def webhook_attempt_failed(self, timer_id: str, due_at: datetime | None, error: str) -> None:
        stamp = self._now_stamp()
        if due_at is None:
            sql = (
                "UPDATE timers SET attempts = attempts + 1, state = 'failed', finished_at = $1,"
                f" payload = {_NOTED} WHERE id = $2 AND state = 'pending'"
            )
            first = stamp
        else:
            sql = (
                "UPDATE timers SET attempts = attempts + 1, due_at = $1, leased_until = NULL,"
                f" payload = {_NOTED} WHERE id = $2 AND state = 'pending'"
            )
            first = format_timestamp(due_at)

        async def failed(tx: WriteTx) -> None:
            await tx.conn.execute(sql, first, timer_id, error, stamp)

        await self._write(failed)

    async def webhook_deliveries_of(self, notification_ids: Sequence[str]) -> dict[str, list[Timer]]:
        found: dict[str, list[Timer]] = {}
        if not notification_ids:
            return found
        # By the index `timers_webhook_notification`: the expression is written as the index has it.
        rows = await self._fetch(
            f"SELECT {TIMER_COLUMNS} FROM timers WHERE kind = '{WEBHOOK_DELIVERY}'"
            " AND (json_nul_hidden(payload)::json ->> 'notification_id') = ANY($1::text[])"
            " ORDER BY created_at, id",
            list(notification_ids),
        )
        for row in rows:
            job = timer_row(row)
            found.setdefault(str(job.payload["notification_id"]), []).append(job)
        return found

    async def dead_webhooks(self, *, limit: int) -> list[Timer]:
        rows = await self._fetch(
            f"SELECT {TIMER_COLUMNS} FROM timers WHERE {_DEAD} ORDER BY finished_at DESC, id DESC LIMIT $1",
            limit,
        )
        return [timer_row(row) for row in rows]

    async def count_dead_webhooks(self) -> int:
        return int(await self._fetchval(f"SELECT count(*) FROM timers WHERE {_DEAD}"))

    async def revive_dead_webhook(self, timer_id: str, actor: str) -> bool:
        stamp = self._now_stamp()
        return await self._change(
            "UPDATE timers SET state = 'pending', due_at = $1, leased_until = NULL, attempts = 0,"
            " finished_at = NULL,"
            " payload = json_text_set(payload, json_build_object('since', $1::text, 'revived_by', $2::text))"
            f" WHERE id = $3 AND {_DEAD} AND json_nul_hidden(payload)::json -> 'content' IS NOT NULL",
            stamp,
            actor,
            timer_id,
        )
