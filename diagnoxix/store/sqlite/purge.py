"""The purge of expired notifications in the embedded store (`NotificationStore.purge_expired`).

A mixin of `SqliteStore`, kept apart so each module holds one concern. One slice at a time, so a
purge never holds the write lock for long (`store.retention` runs it until nothing is left); what
goes with an expired notification goes in the same transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diagnoxix.models import BROADCAST_RECIPIENT
from diagnoxix.store.sqlite.access import SqliteAccess

# Purging deletes in slices so one purge never holds the write lock for long.
PURGE_SLICE = 1000


class PurgeQueries(SqliteAccess):
    """Expired notifications' purge, on the store's primitives (`SqliteAccess`)."""

    # Set by `SqliteStore`: the notifications stored at open, less those deleted since (`counts`).
    _stored_at_open: int

    if TYPE_CHECKING:  # `DeviceQueries` implements it; a definition here would hide it

        def _outlived(self) -> str:
            """The expiry before which a device's token can never be accepted again."""

    async def purge_expired(self) -> int:
        """Delete one slice of expired notifications (secure_delete overwrites them).

        Returns how many were deleted. The per-recipient purge marks move in the same transaction,
        so a crash can never leave a purged seq unrecorded.
        """
        now = self._now_stamp()
        rows = await self._read(
            "SELECT seq FROM notifications WHERE expires_at IS NOT NULL AND expires_at <= ?"
            f" ORDER BY seq LIMIT 1 OFFSET {PURGE_SLICE - 1}",
            (now,),
        )
        # The slice: every expired row up to the PURGE_SLICE-th lowest expired seq (or all of them).
        top = int(rows[0][0]) if rows else self.max_seq
        expired = "expires_at IS NOT NULL AND expires_at <= ? AND seq <= ?"
        deleted = await self._execute_all(
            [
                (
                    "INSERT INTO purge_marks (user_id, purged_through) SELECT user_id, max(seq)"
                    f" FROM notifications WHERE {expired} GROUP BY user_id"
                    " ON CONFLICT (user_id) DO UPDATE SET purged_through ="
                    " max(purged_through, excluded.purged_through)",
                    [(now, top)],
                ),
                (
                    "DELETE FROM broadcast_receipts WHERE notification_id IN"
                    f" (SELECT id FROM notifications WHERE user_id = ? AND {expired})",
                    [(BROADCAST_RECIPIENT, now, top)],
                ),
                # An answer to an action goes with its notification.
                (
                    "DELETE FROM action_answers WHERE notification_id IN"
                    f" (SELECT id FROM notifications WHERE {expired})",
                    [(now, top)],
                ),
                # A device whose token has expired can no longer connect, revoked or not.
                ("DELETE FROM devices WHERE expires_at <= ?", [(self._outlived(),)]),
                # Last: the count returned is this statement's.
                (f"DELETE FROM notifications WHERE {expired}", [(now, top)]),
            ]
        )
        self._stored_at_open -= deleted
        return deleted
