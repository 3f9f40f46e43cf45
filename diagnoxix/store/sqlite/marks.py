"""Delivery state of the embedded store: delivery records, acknowledgements, reads.

A mixin of `SqliteStore`, kept apart so each module holds one concern. What changed state is told
to the mark listeners (the metrics count it), by notification type and priority.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from diagnoxix.models import BROADCAST_RECIPIENT
from diagnoxix.store.protocols import Delivered, MarkListener
from diagnoxix.store.sqlite.reads import NotificationReads
from diagnoxix.store.sqlite.rows import LIVE, SQLITE_NOW

log = logging.getLogger("diagnoxix.store")


class DeliveryMarks(NotificationReads):
    """Delivery and read marks (`NotificationStore`), on the store's primitives (`SqliteAccess`)."""

    # Set by `SqliteStore`: rows marked delivered since open, and who hears of acks and reads.
    _delivered: int
    _mark_listeners: list[MarkListener]

    def _count_delivered(self, rows: int) -> None:
        self._delivered += rows

    def record_deliveries(self, own: Sequence[Delivered], broadcasts: Sequence[Delivered]) -> None:
        """Called for the frames written to plain clients: the time is the commit's, taken by
        SQLite (`SQLITE_NOW`), rather than formatted here for each frame."""
        if self._closing:
            return
        if own:
            self._execute_nowait(
                f"UPDATE notifications SET delivered_at = {SQLITE_NOW} FROM json_each(?) AS d"
                " WHERE notifications.id = d.value->>0 AND notifications.user_id = d.value->>1"
                " AND notifications.delivered_at IS NULL",
                own,
                on_rows=self._count_delivered,
            )
        if broadcasts:
            self._execute_nowait(
                # Only while the broadcast exists: a purge in between must not leave orphans.
                "INSERT OR IGNORE INTO broadcast_receipts (notification_id, user_id, delivered_at)"
                f" SELECT d.value->>0, d.value->>1, {SQLITE_NOW} FROM json_each(?) AS d"
                " WHERE EXISTS (SELECT 1 FROM notifications WHERE id = d.value->>0)",
                broadcasts,
            )

    async def acknowledge(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Record delivery of the user's own notifications and broadcasts; returns the ids that
        were theirs to acknowledge (another user's ids are ignored, never confirmed)."""
        found = await self._addressed(notification_ids, (user_id, BROADCAST_RECIPIENT))
        if found:
            own = [nid for nid, a in found.items() if a.recipient == user_id]
            self.record_deliveries(
                [(nid, user_id) for nid in own],
                [(nid, user_id) for nid, a in found.items() if a.recipient != user_id],
            )
            await self.flush()
            # A broadcast's receipt is per user: the notification row says nothing of it.
            self._marked(
                "acknowledged",
                Counter(a.labels for a in found.values() if a.undelivered or a.recipient != user_id),
            )
        return list(found)

    async def mark_read(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Mark the user's own notifications read (and so delivered); returns the ids that were
        theirs (another user's ids are ignored)."""
        found = await self._addressed(notification_ids, (user_id,))
        if found:
            now = self._now_stamp()
            await self._execute(
                "UPDATE notifications SET read_at = ?, delivered_at = coalesce(delivered_at, ?)"
                " WHERE id = ? AND user_id = ? AND read_at IS NULL",
                [(now, now, nid, user_id) for nid in found],
            )
            self._marked("read", Counter(a.labels for a in found.values() if a.unread))
        return list(found)

    async def mark_all_read(self, user_id: str) -> int:
        """Everything the user could have seen when asking: up to the highest seq committed then.

        A notification stored in the same transaction as this update (it runs after the batch's
        inserts) is newer than the request and stays unread.
        """
        now, upto = self._now_stamp(), self.max_seq
        unread = f"user_id = ? AND read_at IS NULL AND seq <= ? AND {LIVE}"
        groups = await self._read(
            f"SELECT type, priority, count(*) FROM notifications WHERE {unread} GROUP BY type, priority",
            (user_id, upto, now),
        )
        changed = await self._execute(
            f"UPDATE notifications SET read_at = ?, delivered_at = coalesce(delivered_at, ?) WHERE {unread}",
            [(now, now, user_id, upto, now)],
        )
        if changed:
            self._marked("read", {(str(t), str(p)): int(n) for t, p, n in groups})
        return changed

    def add_mark_listener(self, listener: MarkListener) -> None:
        self._mark_listeners.append(listener)

    def _marked(self, kind: str, counts: Mapping[tuple[str, str], int]) -> None:
        if not counts:
            return
        for listener in self._mark_listeners:
            try:
                listener(kind, counts)
            except Exception:
                log.exception("store.listener_failed")
