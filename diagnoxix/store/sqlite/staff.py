"""The staff dashboard's queries: accounts, sign-in sessions, failed logins, record listings.

A mixin of `SqliteStore`, kept apart so each module holds one concern; it reads and writes only
through the store's reader connection and single writer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from diagnoxix.models import Notification, format_timestamp, parse_timestamp
from diagnoxix.store.protocols import NOTIFICATION_STATUSES, StaffAccount, StaffSession
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.rows import LIVE, audit_entry, newest_first, row_to_notification

# Housekeeping deletes at most this many rows per statement, so it never holds the writer long.
STAFF_PURGE_SLICE = 1000


class StaffQueries(SqliteAccess):
    """The staff dashboard's queries (`StaffStore`), on the store's primitives (`SqliteAccess`)."""

    async def create_staff_account(self, username: str, password_hash: str, role: str) -> bool:
        changed = await self._execute(
            "INSERT INTO staff_accounts (username, password_hash, role, created_at) VALUES (?,?,?,?)"
            " ON CONFLICT (username) DO NOTHING",
            [(username, password_hash, role, self._now_stamp())],
        )
        return changed > 0

    async def find_staff_account(self, username: str) -> StaffAccount | None:
        rows = await self._read(
            "SELECT username, password_hash, role, created_at, disabled_at FROM staff_accounts"
            " WHERE username = ?",
            (username,),
        )
        if not rows:
            return None
        name, password_hash, role, created, disabled = rows[0]
        return StaffAccount(
            name,
            password_hash,
            role,
            parse_timestamp(created),
            parse_timestamp(disabled) if disabled else None,
        )

    async def count_staff_accounts(self) -> int:
        rows = await self._read("SELECT count(*) FROM staff_accounts", ())
        return int(rows[0][0])

    async def create_staff_session(self, id_hash: str, username: str, expires_at: datetime) -> None:
        await self._execute(
            "INSERT INTO staff_sessions (id_hash, username, created_at, expires_at) VALUES (?,?,?,?)",
            [(id_hash, username, self._now_stamp(), format_timestamp(expires_at))],
        )

    async def find_staff_session(self, id_hash: str) -> StaffSession | None:
        rows = await self._read(
            "SELECT s.id_hash, s.username, a.role, s.created_at, s.expires_at, s.revoked_at"
            " FROM staff_sessions s JOIN staff_accounts a ON a.username = s.username"
            " WHERE s.id_hash = ? AND a.disabled_at IS NULL",
            (id_hash,),
        )
        if not rows:
            return None
        sid, username, role, created, expires, revoked = rows[0]
        return StaffSession(
            sid,
            username,
            role,
            parse_timestamp(created),
            parse_timestamp(expires),
            parse_timestamp(revoked) if revoked else None,
        )

    async def revoke_staff_session(self, id_hash: str) -> bool:
        changed = await self._execute(
            "UPDATE staff_sessions SET revoked_at = ? WHERE id_hash = ? AND revoked_at IS NULL",
            [(self._now_stamp(), id_hash)],
        )
        return changed > 0

    async def set_staff_password(self, username: str, password_hash: str) -> bool:
        now = self._now_stamp()
        changed = await self._execute(
            "UPDATE staff_accounts SET password_hash = ? WHERE username = ?", [(password_hash, username)]
        )
        await self._end_sessions_of(username, now)
        return changed > 0

    async def set_staff_disabled(self, username: str, disabled: bool) -> bool:
        now = self._now_stamp()
        changed = await self._execute(
            "UPDATE staff_accounts SET disabled_at = ? WHERE username = ?",
            [(now if disabled else None, username)],
        )
        if disabled:
            await self._end_sessions_of(username, now)
        return changed > 0

    async def _end_sessions_of(self, username: str, now: str) -> None:
        await self._execute(
            "UPDATE staff_sessions SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
            [(now, username)],
        )

    async def record_login_failure(self, username: str) -> None:
        await self._execute(
            "INSERT INTO login_failures (username, at) VALUES (?, ?)",
            [(username, self._now_stamp())],
        )

    async def clear_login_failures(self, username: str) -> None:
        await self._execute("DELETE FROM login_failures WHERE username = ?", [(username,)])

    async def count_login_failures(self, username: str, since: datetime) -> int:
        rows = await self._read(
            "SELECT count(*) FROM login_failures WHERE username = ? AND at >= ?",
            (username, format_timestamp(since)),
        )
        return int(rows[0][0])

    async def purge_login_failures(self, older_than: timedelta) -> int:
        cutoff = format_timestamp(self._clock.now() - older_than)
        return await self._execute(
            "DELETE FROM login_failures WHERE id IN"
            " (SELECT id FROM login_failures WHERE at <= ? ORDER BY id LIMIT ?)",
            [(cutoff, STAFF_PURGE_SLICE)],
        )

    async def purge_staff_sessions(self, ended_more_than: timedelta) -> int:
        cutoff = format_timestamp(self._clock.now() - ended_more_than)
        return await self._execute(
            "DELETE FROM staff_sessions WHERE rowid IN (SELECT rowid FROM staff_sessions"
            " WHERE expires_at <= ? OR revoked_at <= ? LIMIT ?)",
            [(cutoff, cutoff, STAFF_PURGE_SLICE)],
        )

    async def list_notifications(
        self,
        *,
        user_id: str | None,
        type: str | None,
        status: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Notification]:
        # Only constant fragments are joined into the SQL; every value is bound.
        where = ["seq < ?", LIVE]
        params: list[Any] = [before_seq if before_seq is not None else self.max_seq + 1, self._now_stamp()]
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if type is not None:
            where.append("type = ?")
            params.append(type)
        if status is not None:
            if status not in NOTIFICATION_STATUSES:
                raise ValueError(f"unknown status {status!r}")
            where.append(
                {
                    "queued": "delivered_at IS NULL AND user_id != '*'",
                    "delivered": "delivered_at IS NOT NULL AND read_at IS NULL",
                    "read": "read_at IS NOT NULL",
                    "broadcast": "user_id = '*'",
                }[status]
            )
        params.append(limit)
        return [row_to_notification(row) for row in await self._read(newest_first(where), tuple(params))]

    async def count_read_since(self, since: datetime) -> int:
        rows = await self._read(
            "SELECT count(*) FROM notifications WHERE read_at >= ?", (format_timestamp(since),)
        )
        return int(rows[0][0])

    async def audit_page(self, *, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT id, at, actor, action, target, details FROM audit_log WHERE id < ?"
            " ORDER BY id DESC LIMIT ?",
            (before_id if before_id is not None else 2**62, limit),
        )
        return [audit_entry(r) for r in rows]
