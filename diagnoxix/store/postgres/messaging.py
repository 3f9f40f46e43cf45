"""Messaging on PostgreSQL: users' locales, staff's templates, answers to actions.

A mixin of `PgStore`, the twin of `store.sqlite.messaging` (tables `user_locales` and
`message_templates` of the critical and messaging migration, `action_answers` of the core). An
answer is recorded once across processes: its notification id is the primary key, and a second
insert, here or in another process, waits for the first to commit and then finds its row.
Templates are listed in byte order, as SQLite orders text, whatever the database's collation.
"""

from __future__ import annotations

from collections.abc import Sequence

from diagnoxix.models import format_timestamp, parse_timestamp
from diagnoxix.store.messaging_records import ActionAnswer, StoredTemplate
from diagnoxix.store.postgres.access import PgAccess, WriteTx


class MessagingQueries(PgAccess):
    """`MessagingStore` on PostgreSQL."""

    async def set_user_locale(self, user_id: str, locale: str | None) -> None:
        stamp = self._now_stamp()

        async def put(tx: WriteTx) -> None:
            if locale is None:
                await tx.conn.execute("DELETE FROM user_locales WHERE user_id = $1", user_id)
                return
            await tx.conn.execute(
                "INSERT INTO user_locales (user_id, locale, updated_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id) DO UPDATE SET locale = excluded.locale,"
                " updated_at = excluded.updated_at",
                user_id,
                locale,
                stamp,
            )

        await self._write(put)

    async def user_locales(self, user_ids: Sequence[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        rows = await self._fetch(
            "SELECT user_id, locale FROM user_locales WHERE user_id = ANY($1::text[])", sorted(set(user_ids))
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def list_templates(self) -> list[StoredTemplate]:
        rows = await self._fetch(
            "SELECT type, locale, title, message, updated_at, updated_by FROM message_templates"
            ' ORDER BY type COLLATE "C", locale COLLATE "C"'
        )
        return [
            StoredTemplate(str(t), str(loc), str(title), str(msg), parse_timestamp(str(at)), str(by))
            for t, loc, title, msg, at, by in rows
        ]

    async def save_template(self, template: StoredTemplate) -> None:
        async def put(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO message_templates (type, locale, title, message, updated_at, updated_by)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (type, locale) DO UPDATE SET"
                " title = excluded.title, message = excluded.message, updated_at = excluded.updated_at,"
                " updated_by = excluded.updated_by",
                template.type,
                template.locale,
                template.title,
                template.message,
                format_timestamp(template.updated_at),
                template.updated_by,
            )

        await self._write(put)

    async def delete_template(self, type: str, locale: str) -> bool:
        async def delete(tx: WriteTx) -> bool:
            return bool(
                await tx.conn.fetchval(
                    "DELETE FROM message_templates WHERE type = $1 AND locale = $2 RETURNING 1", type, locale
                )
            )

        return await self._write(delete)

    async def record_action_answer(self, notification_id: str, user_id: str, action: str) -> ActionAnswer:
        stamp = self._now_stamp()

        async def answer(tx: WriteTx) -> ActionAnswer:
            conn = tx.conn
            inserted = await conn.fetchval(
                "INSERT INTO action_answers (notification_id, user_id, action, answered_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (notification_id) DO NOTHING RETURNING 1",
                notification_id,
                user_id,
                action,
                stamp,
            )
            # A new statement sees the answer another process committed while this one waited.
            row = await conn.fetchrow(
                "SELECT user_id, action, answered_at FROM action_answers WHERE notification_id = $1",
                notification_id,
            )
            return ActionAnswer(
                notification_id, str(row[0]), str(row[1]), parse_timestamp(str(row[2])), bool(inserted)
            )

        return await self._write(answer)
