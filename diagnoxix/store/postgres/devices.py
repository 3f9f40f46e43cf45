"""Devices on PostgreSQL (`DeviceStore`), as `store.sqlite.devices` does them: one row per minted
connection token.

A mixin of `PgStore`. Each process holds the revoked ids in memory (`revoked_tokens` at start,
then the broker's revocation events), so checking a token reads no row. A revocation is one
`UPDATE ... RETURNING` of the tokens still live: two processes revoking the same device at once
each hear only what their own statement revoked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from diagnoxix.models import Device, format_timestamp, parse_timestamp
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.postgres.rows import BYTEWISE
from diagnoxix.store.protocols import RevokedToken

_COLUMNS = "token_id, user_id, created_at, expires_at, last_seen_at, user_agent, revoked_at"


def _device(row: Any) -> Device:
    token_id, user_id, created, expires, seen, agent, revoked = row
    return Device(
        token_id=token_id,
        user_id=user_id,
        created_at=parse_timestamp(created),
        expires_at=parse_timestamp(expires),
        last_seen_at=parse_timestamp(seen) if seen else None,
        user_agent=agent,
        revoked_at=parse_timestamp(revoked) if revoked else None,
    )


class PgDeviceQueries(PgAccess):
    """Devices and revoked tokens (`DeviceStore`), on the store's primitives (`PgAccess`)."""

    async def record_device(
        self, token_id: str, user_id: str, created_at: datetime, expires_at: datetime
    ) -> None:
        row = (token_id, user_id, format_timestamp(created_at), format_timestamp(expires_at))

        async def record(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO devices (token_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (token_id) DO NOTHING",
                *row,
            )

        await self._write(record)

    def touch_device(
        self,
        token_id: str,
        user_id: str,
        created_at: datetime,
        expires_at: datetime,
        user_agent: str | None,
    ) -> None:
        row = (
            token_id,
            user_id,
            format_timestamp(created_at),
            format_timestamp(expires_at),
            self._now_stamp(),
            user_agent,
        )

        async def touch(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO devices (token_id, user_id, created_at, expires_at, last_seen_at, user_agent)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_id) DO UPDATE"
                " SET last_seen_at = excluded.last_seen_at,"
                " user_agent = coalesce(excluded.user_agent, devices.user_agent)"
                " WHERE devices.user_id = excluded.user_id",
                *row,
            )

        self._write_nowait(touch)

    async def list_devices(self, user_id: str, *, limit: int) -> list[Device]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM devices WHERE user_id = $1 AND expires_at > $2"
            f" ORDER BY created_at DESC, token_id {BYTEWISE} LIMIT $3",
            user_id,
            self._now_stamp(),
            limit,
        )
        return [_device(row) for row in rows]

    async def find_device(self, user_id: str, token_id: str) -> Device | None:
        row = await self._fetchrow(
            f"SELECT {_COLUMNS} FROM devices WHERE token_id = $1 AND user_id = $2", token_id, user_id
        )
        return _device(row) if row is not None else None

    async def revoke_devices(self, user_id: str, token_id: str | None) -> list[RevokedToken]:
        # A device that connected a moment ago may be recorded only by a write nobody waits for
        # (its first use, `touch_device`). This process's writer runs writes in the order they
        # were submitted, inside one transaction per batch, so that touch is seen here.
        now = self._now_stamp()
        alive = "user_id = $2 AND revoked_at IS NULL AND expires_at > $1"
        params: tuple[Any, ...] = (now, user_id)
        if token_id is not None:
            alive += " AND token_id = $3"
            params += (token_id,)

        async def revoke(tx: WriteTx) -> list[Any]:
            sql = f"UPDATE devices SET revoked_at = $1 WHERE {alive} RETURNING token_id, expires_at"
            return list(await tx.conn.fetch(sql, *params))

        rows = await self._write(revoke)
        return [(str(row[0]), parse_timestamp(row[1])) for row in rows]

    async def revoked_tokens(self) -> list[RevokedToken]:
        rows = await self._fetch(
            "SELECT token_id, expires_at FROM devices WHERE expires_at > $1 AND revoked_at IS NOT NULL",
            self._outlived(),
        )
        return [(str(row[0]), parse_timestamp(row[1])) for row in rows]
