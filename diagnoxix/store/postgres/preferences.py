"""Users' channel preferences on PostgreSQL (`PreferenceStore`), as `store.sqlite.preferences`
keeps them: one row per user who chose anything, its body the JSON that `rules.preferences`
encodes and decodes (the rules stay in one place)."""

from __future__ import annotations

from diagnoxix.rules.preferences import Preferences, decode, encode
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.postgres.rows import changed


class PgPreferenceQueries(PgAccess):
    """`PreferenceStore` on the store's primitives."""

    async def get_preferences(self, user_id: str) -> Preferences | None:
        body = await self._fetchval("SELECT body FROM user_preferences WHERE user_id = $1", user_id)
        return decode(str(body)) if body is not None else None

    async def put_preferences(self, user_id: str, prefs: Preferences) -> None:
        row = (user_id, encode(prefs), self._now_stamp())

        async def put(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO user_preferences (user_id, body, updated_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                *row,
            )

        await self._write(put)

    async def delete_preferences(self, user_id: str) -> bool:
        async def delete(tx: WriteTx) -> bool:
            status = await tx.conn.execute("DELETE FROM user_preferences WHERE user_id = $1", user_id)
            return changed(status) > 0

        return await self._write(delete)
