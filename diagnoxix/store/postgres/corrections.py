"""Corrections in the PostgreSQL store: retract a notification, update its words, replay both.

A mixin of `PgStore` (the twin of `store.sqlite.corrections`; the `corrections` table is in the
core schema). A correction is a row of its own with a seq from the shared counter: its write is
sequenced (`writer`), so it takes the next seq under the seq lock, commits before any later seq
of any process, and is published (`_corrected`) in its seq's place among the notifications.

The notification's row is locked (`FOR UPDATE`) or changed inside that transaction, and a
retraction deletes it (and a broadcast's receipts) there: two processes retracting the same
notification at once make one retraction, the other finds it gone. Nothing is read first and
then written from Python.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from diagnoxix.models import BROADCAST_RECIPIENT
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.postgres.rows import CORRECTION_COLUMNS, live, row_to_correction, storable
from diagnoxix.store.protocols import Correction, CorrectionResult

# $1 seq, $2 correction id, $3 notification id, $4 user id, $5 notification seq, $6 kind, $7 at.
_INSERT = (
    "INSERT INTO corrections (seq, id, notification_id, user_id, notification_seq, kind, at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


class PgCorrections(PgAccess):
    """`CorrectionStore` on the store's primitives."""

    if TYPE_CHECKING:  # `PgCore` implements these; a definition here would hide them

        def _corrected(self, correction: Correction) -> None:
            """A correction committed: its listeners hear of it, in commit order."""

        def _forget(self, deleted: int) -> None:
            """`deleted` notifications left the store."""

    async def _retraction(self, notification_id: str) -> Correction | None:
        row = await self._fetchrow(
            f"SELECT {CORRECTION_COLUMNS} FROM corrections AS c"
            " WHERE notification_id = $1 AND kind = 'retracted'",
            notification_id,
        )
        return row_to_correction(row) if row is not None else None

    async def _not_done(self, notification_id: str) -> CorrectionResult:
        """Nothing to correct: retracted before (`already`), or no such live notification."""
        earlier = await self._retraction(notification_id)
        return CorrectionResult("already", earlier) if earlier else CorrectionResult("not_found")

    async def retract_notification(self, notification_id: str) -> CorrectionResult:
        if not storable([notification_id]):
            return CorrectionResult("not_found")
        now = self._now_stamp()
        cid = uuid.uuid4().hex

        async def retract(tx: WriteTx) -> tuple[Correction, bool] | None:
            conn = tx.conn
            row = await conn.fetchrow(
                f"SELECT user_id, seq, read_at IS NULL FROM notifications WHERE id = $1 AND {live(2)}"
                " FOR UPDATE",
                notification_id,
                now,
            )
            if row is None:  # expired, or retracted by another call (of any process) first
                return None
            user_id, notification_seq, unread = str(row[0]), int(row[1]), bool(row[2])
            seq = tx.take_seqs(1)
            await conn.execute(
                _INSERT, seq, cid, notification_id, user_id, notification_seq, "retracted", now
            )
            await conn.execute("DELETE FROM broadcast_receipts WHERE notification_id = $1", notification_id)
            await conn.execute("DELETE FROM notifications WHERE id = $1", notification_id)
            fix = row_to_correction((seq, cid, notification_id, user_id, "retracted", now))
            tx.after_commit(lambda: self._corrected(fix))
            return fix, unread and user_id != BROADCAST_RECIPIENT

        done = await self._write(retract, sequenced=True)
        if done is None:
            return await self._not_done(notification_id)
        self._forget(1)
        fix, was_unread = done
        return CorrectionResult("done", fix, was_unread=was_unread)

    async def update_notification(
        self, notification_id: str, *, title: str | None, message: str | None
    ) -> CorrectionResult:
        if not storable([notification_id]):
            return CorrectionResult("not_found")
        now = self._now_stamp()
        cid = uuid.uuid4().hex

        async def update(tx: WriteTx) -> Correction | None:
            conn = tx.conn
            row = await conn.fetchrow(
                "UPDATE notifications SET title = coalesce($1, title), message = coalesce($2, message)"
                f" WHERE id = $3 AND {live(4)} RETURNING user_id, seq, title, message",
                title,
                message,
                notification_id,
                now,
            )
            if row is None:  # retracted (by any process), expired, or never stored
                return None
            user_id = str(row[0])
            seq = tx.take_seqs(1)
            await conn.execute(_INSERT, seq, cid, notification_id, user_id, int(row[1]), "updated", now)
            fix = row_to_correction((seq, cid, notification_id, user_id, "updated", now), row[2], row[3])
            tx.after_commit(lambda: self._corrected(fix))
            return fix

        fix = await self._write(update, sequenced=True)
        return CorrectionResult("done", fix) if fix is not None else await self._not_done(notification_id)

    async def corrections_for(
        self, user_id: str, *, after_seq: int, upto_seq: int, limit: int
    ) -> list[Correction]:
        rows = await self._fetch(
            f"SELECT {CORRECTION_COLUMNS}, n.title, n.message, c.details FROM corrections AS c"
            " LEFT JOIN notifications AS n ON c.kind = 'updated' AND n.id = c.notification_id"
            " AND (n.expires_at IS NULL OR n.expires_at > $1)"
            " WHERE c.user_id IN ($2, $3) AND c.seq > $4 AND c.seq <= $5 ORDER BY c.seq LIMIT $6",
            self._now_stamp(),
            user_id,
            BROADCAST_RECIPIENT,
            after_seq,
            upto_seq,
            limit,
        )
        return [row_to_correction(r, r[6], r[7], r[8]) for r in rows]
