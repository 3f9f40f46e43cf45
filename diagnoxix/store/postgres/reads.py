"""Reads of the PostgreSQL store: resume pages, history, unread counts, lookups by id and key.

A mixin of `PgStore` (the twin of `store.sqlite.reads`). Every read of notifications filters on
`expires_at` (`rows.live`): nothing expired is ever served. Reads go to the pool, each one
statement in its own snapshot: since seqs commit in order across processes (`writer`), a read
that sees seq n sees every seq below it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diagnoxix.models import BROADCAST_RECIPIENT, IdempotencyRecord, Notification
from diagnoxix.store.postgres.access import PgAccess
from diagnoxix.store.postgres.rows import NOTIFICATION_COLUMNS, live, row_to_notification, storable


@dataclass(frozen=True, slots=True)
class Addressed:
    """A notification found for a user: its recipient, its (type, priority) and its state."""

    recipient: str
    labels: tuple[str, str]
    undelivered: bool
    unread: bool


class PgReads(PgAccess):
    """Notification reads (`NotificationStore`) on the store's primitives (`PgAccess`)."""

    async def purged_through(self, user_id: str) -> int:
        """The highest purged seq among the user's notifications and broadcasts (0: none)."""
        found = await self._fetchval(
            "SELECT coalesce(max(purged_through), 0) FROM purge_marks WHERE user_id IN ($1, $2)",
            user_id,
            BROADCAST_RECIPIENT,
        )
        return int(found)

    async def _addressed(self, ids: Sequence[str], recipients: tuple[str, ...]) -> dict[str, Addressed]:
        """Of `ids`, those addressed to `recipients` (a user, '*') and not expired, in the order
        given, without repeats: id -> what acknowledging or reading it needs to know."""
        wanted = list(dict.fromkeys(storable(ids)))
        if not wanted:
            return {}
        rows = await self._fetch(
            "SELECT id, user_id, type, priority, delivered_at IS NULL, read_at IS NULL FROM notifications"
            f" WHERE id = ANY($1::text[]) AND user_id = ANY($2::text[]) AND {live(3)}",
            wanted,
            list(recipients),
            self._now_stamp(),
        )
        found = {
            str(r[0]): Addressed(str(r[1]), (str(r[2]), str(r[3])), bool(r[4]), bool(r[5])) for r in rows
        }
        return {nid: found[nid] for nid in wanted if nid in found}

    async def notifications_for(
        self,
        user_id: str,
        *,
        after_seq: int,
        upto_seq: int,
        limit: int,
        undelivered_only: bool = False,
    ) -> list[Notification]:
        # One ordered branch per recipient, each walking its own run of the (user_id, seq) index,
        # merged: a limit over `user_id IN (...)` would sort every match first.
        own = "user_id = $1 AND delivered_at IS NULL" if undelivered_only else "user_id = $1"
        everyone = "user_id = $2" + (
            " AND NOT EXISTS (SELECT 1 FROM broadcast_receipts AS r"
            " WHERE r.notification_id = notifications.id AND r.user_id = $1)"
            if undelivered_only
            else ""
        )
        window = f"seq > $3 AND seq <= $4 AND {live(5)}"
        rows = await self._fetch(
            _merged([f"{own} AND {window}", f"{everyone} AND {window}"], "ASC", "$6"),
            user_id,
            BROADCAST_RECIPIENT,
            after_seq,
            upto_seq,
            self._now_stamp(),
            limit,
        )
        return [row_to_notification(row) for row in rows]

    async def history(
        self,
        user_id: str,
        *,
        before_seq: int | None,
        limit: int,
        type: str | None = None,
        unread_only: bool = False,
    ) -> list[Notification]:
        params: list[Any] = [user_id, self._now_stamp(), limit]
        conditions = [live(2)]
        if before_seq is not None:
            params.append(before_seq)
            conditions.append(f"seq < ${len(params)}")
        if type is not None:
            params.append(type)
            conditions.append(f"type = ${len(params)}")
        common = " AND ".join(conditions)
        branches = [f"user_id = $1 AND {common}"]
        if unread_only:  # unread state is kept for a user's own notifications; broadcasts have none
            branches[0] += " AND read_at IS NULL"
        else:
            params.append(BROADCAST_RECIPIENT)
            branches.append(f"user_id = ${len(params)} AND {common}")
        rows = await self._fetch(_merged(branches, "DESC", "$3"), *params)
        return [row_to_notification(row) for row in rows]

    async def unread_count(self, user_id: str, *, upto_seq: int | None = None) -> int:
        # Without `upto_seq`: everything committed, by any process, when the read runs.
        bound = "" if upto_seq is None else " AND seq <= $3"
        params: list[Any] = [user_id, self._now_stamp()]
        if upto_seq is not None:
            params.append(upto_seq)
        count = await self._fetchval(
            f"SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL AND {live(2)}{bound}",
            *params,
        )
        return int(count)

    async def get_notifications(self, notification_ids: Sequence[str]) -> list[Notification]:
        wanted = storable(notification_ids)
        if not wanted:
            return []
        rows = await self._fetch(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ANY($1::text[]) AND {live(2)}",
            wanted,
            self._now_stamp(),
        )
        found = {note.id: note for note in map(row_to_notification, rows)}
        return [found[nid] for nid in notification_ids if nid in found]

    async def get_idempotency(self, api_key_id: str, key: str) -> IdempotencyRecord | None:
        row = await self._fetchrow(
            "SELECT request_hash, notification_ids, status FROM idempotency_keys"
            " WHERE api_key_id = $1 AND key = $2",
            api_key_id,
            key,
        )
        if row is None:
            return None
        request_hash, ids, status = row
        return IdempotencyRecord(str(request_hash), tuple(json.loads(ids)), int(status))


def _merged(branches: list[str], order: str, limit: str) -> str:
    """Notifications matching any branch's conditions, by seq in `order`, up to `limit` (a
    placeholder): each branch ordered and limited on its own, then merged."""
    parts = " UNION ALL ".join(
        f"(SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE {where} ORDER BY seq {order} LIMIT {limit})"
        for where in branches
    )
    return f"SELECT * FROM ({parts}) AS found ORDER BY seq {order} LIMIT {limit}"
