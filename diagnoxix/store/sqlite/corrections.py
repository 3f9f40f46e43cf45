"""Corrections in the embedded store: retract a notification, update its words, replay both.

A mixin of `SqliteStore` (db/migrations/0009_corrections.sql). A correction is a row of its own
with a seq from the notifications' counter, given inside the write transaction as one past every
seq handed out (`restores.highest_seq_sql`, which counts corrections too), so it sits in its
recipient's stream after everything committed before it, and the next notification comes after it.

A retraction deletes the notification's row (and a broadcast's receipts) in the same transaction:
history, unread counts, replay and acknowledgements never find it again, and `secure_delete`
overwrites its words on disk. Its seq stays handed out: the correction's row keeps it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from diagnoxix.models import BROADCAST_RECIPIENT, parse_timestamp
from diagnoxix.store.protocols import Correction, CorrectionResult
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.restores import highest_seq_sql
from diagnoxix.store.sqlite.rows import LIVE

_COLUMNS = "c.seq, c.id, c.notification_id, c.user_id, c.kind, c.at"
# ?1 correction id, ?2 kind, ?3 now, ?4 notification id: a correction of a live notification.
_INSERT = (
    "INSERT INTO corrections (seq, id, notification_id, user_id, notification_seq, kind, at)"
    f" SELECT ({highest_seq_sql()}) + 1, ?1, id, user_id, seq, ?2, ?3 FROM notifications"
    " WHERE id = ?4 AND (expires_at IS NULL OR expires_at > ?3)"
)
_MADE = "EXISTS (SELECT 1 FROM corrections WHERE id = ?)"


def _correction(
    row: tuple[Any, ...], title: str | None = None, message: str | None = None, details: str | None = None
) -> Correction:
    seq, cid, nid, user_id, kind, at = row[:6]
    return Correction(
        seq=int(seq),
        id=str(cid),
        notification_id=str(nid),
        user_id=str(user_id),
        kind=kind if kind in ("retracted", "acknowledged") else "updated",
        at=parse_timestamp(str(at)),
        title=title,
        message=message,
        details=json.loads(details) if details else {},
    )


class CorrectionQueries(SqliteAccess):
    """`CorrectionStore` on the store's primitives."""

    def _corrected(self, correction: Correction) -> None:
        """A correction committed: its listeners hear of it, in commit order (`SqliteStore`)."""
        raise NotImplementedError

    def _forget(self, deleted: int) -> None:
        """`deleted` notifications left the store (`SqliteStore`)."""
        raise NotImplementedError

    async def _retraction(self, notification_id: str) -> Correction | None:
        rows = await self._read_now(
            f"SELECT {_COLUMNS} FROM corrections AS c WHERE notification_id = ? AND kind = 'retracted'",
            (notification_id,),
        )
        return _correction(rows[0]) if rows else None

    def _on_correction(self, made: list[Correction], words: bool) -> Callable[[list[tuple[Any, ...]]], None]:
        """What the writer calls with the correction read back inside its transaction, right after
        the commit: it is published there, in its seq's place among the notifications (never
        after a later one), then kept in `made` for the caller."""

        def committed(rows: list[tuple[Any, ...]]) -> None:
            if not rows:  # nothing to correct: gone meanwhile (expired, retracted concurrently)
                return
            row = rows[0]
            fix = _correction(row, str(row[6]), str(row[7])) if words else _correction(row)
            made.append(fix)
            self._corrected(fix)

        return committed

    async def retract_notification(self, notification_id: str) -> CorrectionResult:
        if not notification_id.isascii():
            return CorrectionResult("not_found")
        now = self._now_stamp()
        before = await self._read(
            f"SELECT user_id, read_at IS NULL FROM notifications WHERE id = ? AND {LIVE}",
            (notification_id, now),
        )
        if not before:
            earlier = await self._retraction(notification_id)
            return CorrectionResult("already", earlier) if earlier else CorrectionResult("not_found")
        cid = uuid.uuid4().hex
        made: list[Correction] = []
        deleted = await self._execute_all(
            [
                (_INSERT, [(cid, "retracted", now, notification_id)]),
                (
                    "DELETE FROM broadcast_receipts WHERE notification_id = ? AND " + _MADE,
                    [(notification_id, cid)],
                ),
                ("DELETE FROM notifications WHERE id = ? AND " + _MADE, [(notification_id, cid)]),
            ],
            query=(f"SELECT {_COLUMNS} FROM corrections AS c WHERE c.id = ?", (cid,)),
            on_commit=self._on_correction(made, words=False),
        )
        if not made:  # expired, or retracted by a concurrent call, in between
            earlier = await self._retraction(notification_id)
            return CorrectionResult("already", earlier) if earlier else CorrectionResult("not_found")
        self._forget(deleted)
        user_id, unread = before[0]
        return CorrectionResult("done", made[0], was_unread=bool(unread) and user_id != BROADCAST_RECIPIENT)

    async def update_notification(
        self, notification_id: str, *, title: str | None, message: str | None
    ) -> CorrectionResult:
        if not notification_id.isascii():
            return CorrectionResult("not_found")
        now = self._now_stamp()
        cid = uuid.uuid4().hex
        made: list[Correction] = []
        await self._execute_all(
            [
                (_INSERT, [(cid, "updated", now, notification_id)]),
                (
                    "UPDATE notifications SET title = coalesce(?, title), message = coalesce(?, message)"
                    " WHERE id = ? AND " + _MADE,
                    [(title, message, notification_id, cid)],
                ),
            ],
            query=(
                f"SELECT {_COLUMNS}, n.title, n.message FROM corrections AS c"
                " JOIN notifications AS n ON n.id = c.notification_id WHERE c.id = ?",
                (cid,),
            ),
            on_commit=self._on_correction(made, words=True),
        )
        if made:
            return CorrectionResult("done", made[0])
        earlier = await self._retraction(notification_id)
        return CorrectionResult("already", earlier) if earlier else CorrectionResult("not_found")

    async def corrections_for(
        self, user_id: str, *, after_seq: int, upto_seq: int, limit: int
    ) -> list[Correction]:
        rows = await self._read(
            f"SELECT {_COLUMNS}, n.title, n.message, c.details FROM corrections AS c"
            " LEFT JOIN notifications AS n ON c.kind = 'updated' AND n.id = c.notification_id"
            " AND (n.expires_at IS NULL OR n.expires_at > ?)"
            " WHERE c.user_id IN (?, ?) AND c.seq > ? AND c.seq <= ? ORDER BY c.seq LIMIT ?",
            (self._now_stamp(), user_id, BROADCAST_RECIPIENT, after_seq, upto_seq, limit),
        )
        return [
            _correction(r, None if r[6] is None else str(r[6]), None if r[7] is None else str(r[7]), r[8])
            for r in rows
        ]
