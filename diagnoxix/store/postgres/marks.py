"""Delivery state of the PostgreSQL store: delivery records, acknowledgements, reads.

A mixin of `PgStore` (the twin of `store.sqlite.marks`). What changed state is told to the mark
listeners (the metrics count it), by notification type and priority. Counted from what each
UPDATE returns, not from a read before it: another process may mark the same rows meanwhile
(two devices of one user, each on its own process), and a row changes state once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from diagnoxix.models import BROADCAST_RECIPIENT
from diagnoxix.store.postgres.access import WriteTx
from diagnoxix.store.postgres.reads import PgReads
from diagnoxix.store.postgres.rows import DB_NOW, live
from diagnoxix.store.protocols import Delivered, MarkListener

log = logging.getLogger("diagnoxix.store")

# $1 notification ids, $2 their users (the same length): the users' own ones, not delivered yet.
_DELIVER_OWN = (
    f"UPDATE notifications AS n SET delivered_at = {DB_NOW}"
    " FROM unnest($1::text[], $2::text[]) AS d(id, user_id)"
    " WHERE n.id = d.id AND n.user_id = d.user_id AND n.delivered_at IS NULL"
)
# Only while the broadcast exists: a purge or a retraction in between must not leave orphans.
_DELIVER_BROADCASTS = (
    "INSERT INTO broadcast_receipts (notification_id, user_id, delivered_at)"
    f" SELECT d.id, d.user_id, {DB_NOW} FROM unnest($1::text[], $2::text[]) AS d(id, user_id)"
    " WHERE EXISTS (SELECT 1 FROM notifications WHERE id = d.id) ON CONFLICT DO NOTHING"
)


def _columns(pairs: Sequence[Delivered]) -> tuple[list[str], list[str]]:
    return [nid for nid, _ in pairs], [user for _, user in pairs]


class PgMarks(PgReads):
    """Delivery and read marks (`NotificationStore`) on the store's primitives (`PgAccess`)."""

    # Set by `PgCore`: who hears of acknowledgements and reads.
    _mark_listeners: list[MarkListener]

    def record_deliveries(self, own: Sequence[Delivered], broadcasts: Sequence[Delivered]) -> None:
        """Called for the frames written to plain clients: the time is the statement's, taken by
        the database, rather than formatted here for each frame."""
        if not own and not broadcasts:
            return
        own_columns, broadcast_columns = _columns(own), _columns(broadcasts)

        async def deliver(tx: WriteTx) -> None:
            if own:
                await tx.conn.execute(_DELIVER_OWN, *own_columns)
            if broadcasts:
                await tx.conn.execute(_DELIVER_BROADCASTS, *broadcast_columns)

        self._write_nowait(deliver)

    async def acknowledge(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Record delivery of the user's own notifications and broadcasts; returns the ids that
        were theirs to acknowledge (another user's ids are ignored, never confirmed)."""
        found = await self._addressed(notification_ids, (user_id, BROADCAST_RECIPIENT))
        if not found:
            return []
        own = [nid for nid, a in found.items() if a.recipient == user_id]
        broadcasts = [nid for nid, a in found.items() if a.recipient != user_id]

        async def deliver(tx: WriteTx) -> list[str]:
            changed: list[str] = []
            if own:
                rows = await tx.conn.fetch(_DELIVER_OWN + " RETURNING n.id", own, [user_id] * len(own))
                changed = [str(r[0]) for r in rows]
            if broadcasts:
                await tx.conn.execute(_DELIVER_BROADCASTS, broadcasts, [user_id] * len(broadcasts))
            return changed

        # After every delivery record submitted before it, in the same writer.
        delivered = set(await self._write(deliver))
        # A broadcast's receipt is per user: as the SQLite store does, each acknowledgement of
        # one counts (the notification row says nothing of who received it).
        self._marked(
            "acknowledged",
            Counter(a.labels for nid, a in found.items() if nid in delivered or a.recipient != user_id),
        )
        return list(found)

    async def mark_read(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Mark the user's own notifications read (and so delivered); returns the ids that were
        theirs (another user's ids are ignored)."""
        found = await self._addressed(notification_ids, (user_id,))
        if not found:
            return []
        now = self._now_stamp()

        async def read(tx: WriteTx) -> list[Any]:
            return list(
                await tx.conn.fetch(
                    "UPDATE notifications SET read_at = $1, delivered_at = coalesce(delivered_at, $1)"
                    " WHERE id = ANY($2::text[]) AND user_id = $3 AND read_at IS NULL"
                    " RETURNING type, priority",
                    now,
                    list(found),
                    user_id,
                )
            )

        changed = await self._write(read)
        self._marked("read", Counter((str(r[0]), str(r[1])) for r in changed))
        return list(found)

    async def mark_all_read(self, user_id: str) -> int:
        """Everything the user could have seen when asking: up to the highest seq committed, by
        any process, then. A notification committed after that read (even in the same batch as
        this update) is newer than the request and stays unread."""
        upto = int(await self._fetchval("SELECT last FROM seq_counter"))
        now = self._now_stamp()

        async def read_all(tx: WriteTx) -> list[Any]:
            return list(
                await tx.conn.fetch(
                    "WITH changed AS (UPDATE notifications SET read_at = $1,"
                    " delivered_at = coalesce(delivered_at, $1)"
                    f" WHERE user_id = $2 AND read_at IS NULL AND seq <= $3 AND {live(1)}"
                    " RETURNING type, priority)"
                    " SELECT type, priority, count(*) FROM changed GROUP BY type, priority",
                    now,
                    user_id,
                    upto,
                )
            )

        groups = await self._write(read_all)
        self._marked("read", {(str(t), str(p)): int(n) for t, p, n in groups})
        return sum(int(n) for _, _, n in groups)

    def _marked(self, kind: str, counts: Mapping[tuple[str, str], int]) -> None:
        if not counts:
            return
        for listener in self._mark_listeners:
            try:
                listener(kind, counts)
            except Exception:
                log.exception("store.listener_failed")
