"""Messaging in the embedded store: users' locales, staff's templates, answers to actions.

A mixin of `SqliteStore` (the messaging migration's tables `user_locales`, `message_templates`,
`action_answers`).
"""

from __future__ import annotations

from collections.abc import Sequence

from diagnoxix.models import format_timestamp, parse_timestamp
from diagnoxix.store.messaging_records import ActionAnswer, StoredTemplate
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.rows import chunks


class MessagingQueries(SqliteAccess):
    """`MessagingStore` on the store's primitives."""

    async def set_user_locale(self, user_id: str, locale: str | None) -> None:
        if locale is None:
            await self._execute("DELETE FROM user_locales WHERE user_id = ?", [(user_id,)])
            return
        await self._execute(
            "INSERT INTO user_locales (user_id, locale, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET locale = excluded.locale, updated_at = excluded.updated_at",
            [(user_id, locale, format_timestamp(self._clock.now()))],
        )

    async def user_locales(self, user_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunks(sorted(set(user_ids))):
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT user_id, locale FROM user_locales WHERE user_id IN ({marks})", tuple(chunk)
            )
            found.update((str(u), str(loc)) for u, loc in rows)
        return found

    async def list_templates(self) -> list[StoredTemplate]:
        rows = await self._read(
            "SELECT type, locale, title, message, updated_at, updated_by FROM message_templates"
            " ORDER BY type, locale",
            (),
        )
        return [
            StoredTemplate(str(t), str(loc), str(title), str(msg), parse_timestamp(str(at)), str(by))
            for t, loc, title, msg, at, by in rows
        ]

    async def save_template(self, template: StoredTemplate) -> None:
        await self._execute(
            "INSERT INTO message_templates (type, locale, title, message, updated_at, updated_by)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (type, locale) DO UPDATE SET title = excluded.title,"
            " message = excluded.message, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            [
                (
                    template.type,
                    template.locale,
                    template.title,
                    template.message,
                    format_timestamp(template.updated_at),
                    template.updated_by,
                )
            ],
        )

    async def delete_template(self, type: str, locale: str) -> bool:
        deleted = await self._execute(
            "DELETE FROM message_templates WHERE type = ? AND locale = ?", [(type, locale)]
        )
        return deleted > 0

    async def record_action_answer(self, notification_id: str, user_id: str, action: str) -> ActionAnswer:
        now = format_timestamp(self._clock.now())
        inserted = await self._execute(
            "INSERT INTO action_answers (notification_id, user_id, action, answered_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (notification_id) DO NOTHING",
            [(notification_id, user_id, action, now)],
        )
        rows = await self._read_now(
            "SELECT user_id, action, answered_at FROM action_answers WHERE notification_id = ?",
            (notification_id,),
        )
        (who, what, at) = rows[0]
        return ActionAnswer(notification_id, str(who), str(what), parse_timestamp(str(at)), inserted > 0)
