"""What messaging asks of a store (`MessagingStore`): the users' locales, staff's templates of the
standard texts, and users' answers to a notification's actions; and their records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    """Staff's wording of one notification type in one locale (Jinja source, plain text)."""

    type: str
    locale: str
    title: str
    message: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class ActionAnswer:
    """A user's answer to one of a notification's actions; `recorded`: by this call (False: the
    notification had been answered already, and this is that first answer)."""

    notification_id: str
    user_id: str
    action: str
    answered_at: datetime
    recorded: bool


class MessagingStore(Protocol):
    async def set_user_locale(self, user_id: str, locale: str | None) -> None:
        """The user's locale from now on (None: none of their own, the server's default); durable
        once this returns."""

    async def user_locales(self, user_ids: Sequence[str]) -> dict[str, str]:
        """The locales of those of these users who have one."""

    async def list_templates(self) -> list[StoredTemplate]:
        """Every stored template, by type then locale."""

    async def save_template(self, template: StoredTemplate) -> None:
        """Add or replace the template of its type and locale; durable once this returns."""

    async def delete_template(self, type: str, locale: str) -> bool:
        """Remove a stored template (the built-in wording applies again); False: there was none."""

    async def record_action_answer(self, notification_id: str, user_id: str, action: str) -> ActionAnswer:
        """Record the user's answer once: a notification is answered at most once, and a second
        call returns the first answer with `recorded` False."""
