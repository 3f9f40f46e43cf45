"""Users' channel preferences in the embedded store (db/migrations/0011_preferences.sql).

A mixin of `SqliteStore`: one row per user who chose anything, its body the JSON that
`rules.preferences` encodes and decodes (the rules stay in one place).
"""

from __future__ import annotations

from diagnoxix.rules.preferences import Preferences, decode, encode
from diagnoxix.store.sqlite.access import SqliteAccess


class PreferenceQueries(SqliteAccess):
    """`PreferenceStore` on the store's primitives."""

    async def get_preferences(self, user_id: str) -> Preferences | None:
        rows = await self._read_now("SELECT body FROM user_preferences WHERE user_id = ?", (user_id,))
        return decode(str(rows[0][0])) if rows else None

    async def put_preferences(self, user_id: str, prefs: Preferences) -> None:
        await self._execute(
            "INSERT INTO user_preferences (user_id, body, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            [(user_id, encode(prefs), self._now_stamp())],
        )

    async def delete_preferences(self, user_id: str) -> bool:
        return await self._execute("DELETE FROM user_preferences WHERE user_id = ?", [(user_id,)]) > 0
