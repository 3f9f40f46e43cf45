"""Reads of the embedded store: resume pages, history, unread counts, lookups by id and key.

A mixin of `SqliteStore`, kept apart so each module holds one concern. Every read of notifications
filters on `expires_at` (`LIVE`): nothing expired is ever served.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diagnoxix.models import BROADCAST_RECIPIENT, IdempotencyRecord, Notification
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.batch import NOTIFICATION_COLUMNS
from diagnoxix.store.sqlite.rows import (
    LIVE,
    chunks,
    newest_first,
    row_to_notification,
)


@dataclass(frozen=True, slots=True)
class Addressed:
    """A notification found for a user: its recipient, its (type, priority) and its state."""

    recipient: str
    labels: tuple[str, str]
    undelivered: bool
    unread: bool


class NotificationReads(SqliteAccess):
    """Notification reads (`NotificationStore`), on the store's primitives (`SqliteAccess`)."""

    async def purged_through(self, user_id: str) -> int:
        """The highest purged seq among the user's notifications and broadcasts (0: none)."""
        rows = await self._read(
            "SELECT coalesce(max(purged_through), 0) FROM purge_marks WHERE user_id IN (?, ?)",
            (user_id, BROADCAST_RECIPIENT),
        )
        return int(rows[0][0])

    async def _addressed(self, ids: Sequence[str], recipients: tuple[str, ...]) -> dict[str, Addressed]:
        """Of `ids`, those addressed to `recipients` (a user, '*') and not expired, in the order
        given, without repeats: id -> what acknowledging or reading it needs to know.
        """
        # Every id this store made is ASCII; anything else (a lone surrogate from a caller that
        # skipped the rules) is no id of ours, and SQLite could not even bind it.
        ids = [nid for nid in ids if nid.isascii()]
        marks = ",".join("?" * len(recipients))
        found: dict[str, Addressed] = {}
        for chunk in chunks(ids):
            rows = await self._read(
                "SELECT id, user_id, type, priority, delivered_at IS NULL, read_at IS NULL"
                f" FROM notifications WHERE id IN ({','.join('?' * len(chunk))})"
                f" AND user_id IN ({marks}) AND {LIVE}",
                (*chunk, *recipients, self._now_stamp()),
            )
            for r in rows:
                found[str(r[0])] = Addressed(str(r[1]), (str(r[2]), str(r[3])), bool(r[4]), bool(r[5]))
        return {nid: found[nid] for nid in dict.fromkeys(ids) if nid in found}

    async def notifications_for(
        self,
        user_id: str,
        *,
        after_seq: int,
        upto_seq: int,
        limit: int,
        undelivered_only: bool = False,
    ) -> list[Notification]:
        now = self._now_stamp()
        if undelivered_only:
            sql = (
                f"SELECT {NOTIFICATION_COLUMNS} FROM notifications"
                f" WHERE user_id = ? AND delivered_at IS NULL AND seq > ? AND seq <= ? AND {LIVE}"
                f" UNION ALL SELECT {NOTIFICATION_COLUMNS} FROM notifications AS n"
                f" WHERE user_id = ? AND seq > ? AND seq <= ? AND {LIVE} AND NOT EXISTS"
                " (SELECT 1 FROM broadcast_receipts AS r WHERE r.notification_id = n.id AND r.user_id = ?)"
                " ORDER BY seq LIMIT ?"
            )
            params: tuple[Any, ...] = (
                user_id, after_seq, upto_seq, now,
                BROADCAST_RECIPIENT, after_seq, upto_seq, now, user_id, limit,
            )  # fmt: skip
        else:
            sql = (
                f"SELECT {NOTIFICATION_COLUMNS} FROM notifications"
                f" WHERE user_id IN (?, ?) AND seq > ? AND seq <= ? AND {LIVE} ORDER BY seq LIMIT ?"
            )
            params = (user_id, BROADCAST_RECIPIENT, after_seq, upto_seq, now, limit)
        return [row_to_notification(row) for row in await self._read(sql, params)]

    async def history(
        self,
        user_id: str,
        *,
        before_seq: int | None,
        limit: int,
        type: str | None = None,
        unread_only: bool = False,
    ) -> list[Notification]:
        before = before_seq if before_seq is not None else self.max_seq + 1
        # Unread state is kept for a user's own notifications; broadcasts have none.
        recipients: tuple[str, ...] = (user_id,) if unread_only else (user_id, BROADCAST_RECIPIENT)
        conditions = [f"user_id IN ({','.join('?' * len(recipients))})", "seq < ?", LIVE]
        params: list[Any] = [*recipients, before, self._now_stamp()]
        if type is not None:
            conditions.append("type = ?")
            params.append(type)
        if unread_only:
            conditions.append("read_at IS NULL")
        params.append(limit)
        return [row_to_notification(row) for row in await self._read(newest_first(conditions), tuple(params))]

    async def unread_count(self, user_id: str, *, upto_seq: int | None = None) -> int:
        rows = await self._read(
            "SELECT count(*) FROM notifications"
            f" WHERE user_id = ? AND read_at IS NULL AND seq <= ? AND {LIVE}",
            (user_id, upto_seq if upto_seq is not None else self.max_seq, self._now_stamp()),
        )
        return int(rows[0][0])

    async def get_notifications(self, notification_ids: Sequence[str]) -> list[Notification]:
        found: dict[str, Notification] = {}
        for chunk in chunks(notification_ids):
            rows = await self._read(
                f"SELECT {NOTIFICATION_COLUMNS} FROM notifications"
                f" WHERE id IN ({','.join('?' * len(chunk))}) AND {LIVE}",
                (*chunk, self._now_stamp()),
            )
            for row in rows:
                note = row_to_notification(row)
                found[note.id] = note
        return [found[nid] for nid in notification_ids if nid in found]

    async def get_idempotency(self, api_key_id: str, key: str) -> IdempotencyRecord | None:
        rows = await self._read_now(
            "SELECT request_hash, notification_ids, status FROM idempotency_keys"
            " WHERE api_key_id = ? AND key = ?",
            (api_key_id, key),
        )
        if not rows:
            return None
        request_hash, ids, status = rows[0]
        return IdempotencyRecord(request_hash, tuple(json.loads(ids)), int(status))
