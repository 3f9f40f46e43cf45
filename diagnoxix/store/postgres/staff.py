"""The staff dashboard's queries on PostgreSQL (`StaffStore`), as `store.sqlite.staff` does them:
accounts, sign-in sessions, failed sign-ins, and the listings across users.

A mixin of `PgStore`. What two processes could race for is settled by the database: a username
is taken by `INSERT ... ON CONFLICT DO NOTHING`, a session is revoked by the `UPDATE` that finds it
live, and a new password or a disabled account ends the sessions in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from diagnoxix.models import BROADCAST_RECIPIENT, Notification, format_timestamp, parse_timestamp
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.postgres.rows import (
    AUDIT_COLUMNS,
    NOTIFICATION_COLUMNS,
    audit_entry,
    changed,
    row_to_notification,
)
from diagnoxix.store.protocols import NOTIFICATION_STATUSES, StaffAccount, StaffSession

# Housekeeping deletes at most this many rows per statement, so it never holds the writer long.
STAFF_PURGE_SLICE = 1000
# A seq, or an audit entry's id, above any real one: the first page.
_NO_BOUND = 2**62

# Each status as a constant condition; values are always bound.
_STATUS_CONDITIONS = {
    "queued": f"delivered_at IS NULL AND user_id != '{BROADCAST_RECIPIENT}'",
    "delivered": "delivered_at IS NOT NULL AND read_at IS NULL",
    "read": "read_at IS NOT NULL",
    "broadcast": f"user_id = '{BROADCAST_RECIPIENT}'",
}


class PgStaffQueries(PgAccess):
    """The staff dashboard's queries (`StaffStore`), on the store's primitives (`PgAccess`)."""

    async def create_staff_account(self, username: str, password_hash: str, role: str) -> bool:
        stamp = self._now_stamp()

        async def create(tx: WriteTx) -> bool:
            status = await tx.conn.execute(
                "INSERT INTO staff_accounts (username, password_hash, role, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING",
                username,
                password_hash,
                role,
                stamp,
            )
            return changed(status) > 0

        return await self._write(create)

    async def find_staff_account(self, username: str) -> StaffAccount | None:
        row = await self._fetchrow(
            "SELECT username, password_hash, role, created_at, disabled_at FROM staff_accounts"
            " WHERE username = $1",
            username,
        )
        if row is None:
            return None
        name, password_hash, role, created, disabled = row
        return StaffAccount(
            name,
            password_hash,
            role,
            parse_timestamp(created),
            parse_timestamp(disabled) if disabled else None,
        )

    async def count_staff_accounts(self) -> int:
        return int(await self._fetchval("SELECT count(*) FROM staff_accounts"))

    async def create_staff_session(self, id_hash: str, username: str, expires_at: datetime) -> None:
        row = (id_hash, username, self._now_stamp(), format_timestamp(expires_at))

        async def create(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO staff_sessions (id_hash, username, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                *row,
            )

        await self._write(create)

    async def find_staff_session(self, id_hash: str) -> StaffSession | None:
        row = await self._fetchrow(
            "SELECT s.id_hash, s.username, a.role, s.created_at, s.expires_at, s.revoked_at"
            " FROM staff_sessions s JOIN staff_accounts a ON a.username = s.username"
            " WHERE s.id_hash = $1 AND a.disabled_at IS NULL",
            id_hash,
        )
        if row is None:
            return None
        sid, username, role, created, expires, revoked = row
        return StaffSession(
            sid,
            username,
            role,
            parse_timestamp(created),
            parse_timestamp(expires),
            parse_timestamp(revoked) if revoked else None,
        )

    async def revoke_staff_session(self, id_hash: str) -> bool:
        stamp = self._now_stamp()

        async def revoke(tx: WriteTx) -> bool:
            status = await tx.conn.execute(
                "UPDATE staff_sessions SET revoked_at = $1 WHERE id_hash = $2 AND revoked_at IS NULL",
                stamp,
                id_hash,
            )
            return changed(status) > 0

        return await self._write(revoke)

    async def set_staff_password(self, username: str, password_hash: str) -> bool:
        stamp = self._now_stamp()

        async def replace(tx: WriteTx) -> bool:
            status = await tx.conn.execute(
                "UPDATE staff_accounts SET password_hash = $1 WHERE username = $2", password_hash, username
            )
            await _end_sessions_of(tx, username, stamp)
            return changed(status) > 0

        return await self._write(replace)

    async def set_staff_disabled(self, username: str, disabled: bool) -> bool:
        stamp = self._now_stamp()

        async def switch(tx: WriteTx) -> bool:
            status = await tx.conn.execute(
                "UPDATE staff_accounts SET disabled_at = $1 WHERE username = $2",
                stamp if disabled else None,
                username,
            )
            if disabled:
                await _end_sessions_of(tx, username, stamp)
            return changed(status) > 0

        return await self._write(switch)

    async def record_login_failure(self, username: str) -> None:
        stamp = self._now_stamp()

        async def record(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO login_failures (username, at) VALUES ($1, $2)", username, stamp
            )

        await self._write(record)

    async def clear_login_failures(self, username: str) -> None:
        async def clear(tx: WriteTx) -> None:
            await tx.conn.execute("DELETE FROM login_failures WHERE username = $1", username)

        await self._write(clear)

    async def count_login_failures(self, username: str, since: datetime) -> int:
        return int(
            await self._fetchval(
                "SELECT count(*) FROM login_failures WHERE username = $1 AND at >= $2",
                username,
                format_timestamp(since),
            )
        )

    async def purge_login_failures(self, older_than: timedelta) -> int:
        cutoff = format_timestamp(self._clock.now() - older_than)

        async def purge(tx: WriteTx) -> int:
            status = await tx.conn.execute(
                "DELETE FROM login_failures WHERE id IN"
                " (SELECT id FROM login_failures WHERE at <= $1 ORDER BY id LIMIT $2)",
                cutoff,
                STAFF_PURGE_SLICE,
            )
            return changed(status)

        return await self._write(purge)

    async def purge_staff_sessions(self, ended_more_than: timedelta) -> int:
        cutoff = format_timestamp(self._clock.now() - ended_more_than)

        async def purge(tx: WriteTx) -> int:
            status = await tx.conn.execute(
                "DELETE FROM staff_sessions WHERE id_hash IN (SELECT id_hash FROM staff_sessions"
                " WHERE expires_at <= $1 OR revoked_at <= $1 LIMIT $2)",
                cutoff,
                STAFF_PURGE_SLICE,
            )
            return changed(status)

        return await self._write(purge)

    async def list_notifications(
        self,
        *,
        user_id: str | None,
        type: str | None,
        status: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Notification]:
        if status is not None and status not in NOTIFICATION_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        # Only constant fragments are joined into the SQL; every value is bound.
        params: list[Any] = [before_seq if before_seq is not None else _NO_BOUND, self._now_stamp()]
        where = ["seq < $1", "(expires_at IS NULL OR expires_at > $2)"]
        if user_id is not None:
            params.append(user_id)
            where.append(f"user_id = ${len(params)}")
        if type is not None:
            params.append(type)
            where.append(f"type = ${len(params)}")
        if status is not None:
            where.append(_STATUS_CONDITIONS[status])
        params.append(limit)
        rows = await self._fetch(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE {' AND '.join(where)}"
            f" ORDER BY seq DESC LIMIT ${len(params)}",
            *params,
        )
        return [row_to_notification(row) for row in rows]

    async def count_read_since(self, since: datetime) -> int:
        count = await self._fetchval(
            "SELECT count(*) FROM notifications WHERE read_at >= $1", format_timestamp(since)
        )
        return int(count)

    async def audit_page(self, *, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        rows = await self._fetch(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
            before_id if before_id is not None else _NO_BOUND,
            limit,
        )
        return [audit_entry(row) for row in rows]


async def _end_sessions_of(tx: WriteTx, username: str, stamp: str) -> None:
    await tx.conn.execute(
        "UPDATE staff_sessions SET revoked_at = $1 WHERE username = $2 AND revoked_at IS NULL",
        stamp,
        username,
    )
