"""Devices in the embedded store (`DeviceStore`): one row per minted connection token.

A mixin of `SqliteStore`, kept apart so each module holds one concern. Nothing here is on the
path of checking a token: each process holds the revoked ids in memory (`revoked_tokens` at
start, then the broker's revocation events), so a connect or an API call reads no row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from diagnoxix.models import Device, format_timestamp, parse_timestamp
from diagnoxix.store.protocols import RevokedToken
from diagnoxix.store.sqlite.access import SqliteAccess

# A device is kept, and a revoked token is loaded at start, this long past its token's expiry:
# more than the leeway a token is checked with (`auth.TOKEN_LEEWAY_SECONDS`), so a revoked token
# can never come back as expired-but-tolerated.
EXPIRY_MARGIN_SECONDS = 60

_COLUMNS = "token_id, user_id, created_at, expires_at, last_seen_at, user_agent, revoked_at"


def _device(row: tuple[Any, ...]) -> Device:
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


class DeviceQueries(SqliteAccess):
    """Devices and revoked tokens (`DeviceStore`), on the store's primitives (`SqliteAccess`)."""

    async def record_device(
        self, token_id: str, user_id: str, created_at: datetime, expires_at: datetime
    ) -> None:
        await self._execute(
            "INSERT INTO devices (token_id, user_id, created_at, expires_at) VALUES (?,?,?,?)"
            " ON CONFLICT (token_id) DO NOTHING",
            [(token_id, user_id, format_timestamp(created_at), format_timestamp(expires_at))],
        )

    def touch_device(
        self,
        token_id: str,
        user_id: str,
        created_at: datetime,
        expires_at: datetime,
        user_agent: str | None,
    ) -> None:
        self._execute_nowait(
            "INSERT INTO devices (token_id, user_id, created_at, expires_at, last_seen_at, user_agent)"
            " SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each(?)"
            " WHERE true ON CONFLICT (token_id) DO UPDATE SET last_seen_at = excluded.last_seen_at,"
            " user_agent = coalesce(excluded.user_agent, devices.user_agent)"
            " WHERE devices.user_id = excluded.user_id",
            [
                [
                    token_id,
                    user_id,
                    format_timestamp(created_at),
                    format_timestamp(expires_at),
                    self._now_stamp(),
                    user_agent,
                ]
            ],
        )

    async def list_devices(self, user_id: str, *, limit: int) -> list[Device]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM devices WHERE user_id = ? AND expires_at > ?"
            " ORDER BY created_at DESC, token_id LIMIT ?",
            (user_id, self._now_stamp(), limit),
        )
        return [_device(row) for row in rows]

    async def find_device(self, user_id: str, token_id: str) -> Device | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM devices WHERE token_id = ? AND user_id = ?", (token_id, user_id)
        )
        return _device(rows[0]) if rows else None

    async def revoke_devices(self, user_id: str, token_id: str | None) -> list[RevokedToken]:
        # A device that connected a moment ago is recorded by a write nobody waits for (its first
        # use, `touch_device`): let it commit first, or "revoke all" would not find that token and
        # it could connect again.
        await self.flush()
        now = self._now_stamp()
        alive = "user_id = ? AND revoked_at IS NULL AND expires_at > ?"
        params: tuple[Any, ...] = (user_id, now)
        if token_id is not None:
            alive += " AND token_id = ?"
            params += (token_id,)
        rows = await self._read(f"SELECT token_id, expires_at FROM devices WHERE {alive}", params)
        if not rows:
            return []
        # By id, as read: a token minted meanwhile was not among those the caller revoked.
        await self._execute(
            "UPDATE devices SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
            [(now, row[0]) for row in rows],
        )
        return [(str(row[0]), parse_timestamp(row[1])) for row in rows]

    def _outlived(self) -> str:
        """The expiry before which a device's token can never be accepted again."""
        return format_timestamp(self._clock.now() - timedelta(seconds=EXPIRY_MARGIN_SECONDS))

    async def revoked_tokens(self) -> list[RevokedToken]:
        rows = await self._read(
            "SELECT token_id, expires_at FROM devices WHERE expires_at > ? AND revoked_at IS NOT NULL",
            (self._outlived(),),
        )
        return [(str(row[0]), parse_timestamp(row[1])) for row in rows]
