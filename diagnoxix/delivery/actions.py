"""Answers to a notification's actions: a user confirms or declines, and the sender hears of it.

`ActionAnswers.answer` checks that the notification is the user's (another user's, a retracted or
an expired one is not found) and that the action is one of its own, records the answer once (a
notification is answered at most once: the same answer again changes nothing, another one is
refused with the first), and hands each first answer to the listeners registered in `app.py`
(the seam for the sender's webhook), synchronously, after it is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from diagnoxix.models import Notification
from diagnoxix.store.messaging_records import ActionAnswer, MessagingStore
from diagnoxix.store.protocols import NotificationStore

log = logging.getLogger("diagnoxix.actions")


@dataclass(frozen=True, slots=True)
class AnsweredAction:
    """What a listener gets: which notification (its id, type and recipient), which action, when,
    and the API key that sent the notification (None: sent from the dashboard or in-process)."""

    notification_id: str
    user_id: str
    type: str
    action: str
    answered_at: datetime
    sent_by: str | None


ActionListener = Callable[[AnsweredAction], None]


class NotAnswerable(LookupError):
    """No such notification of this user, or no such action on it."""


class AlreadyAnswered(Exception):
    def __init__(self, first: ActionAnswer) -> None:
        super().__init__("the notification was answered already")
        self.first = first


class _Store(NotificationStore, MessagingStore, Protocol):
    pass


class ActionAnswers:
    def __init__(self, store: _Store) -> None:
        self._store = store
        self._listeners: list[ActionListener] = []

    def add_listener(self, listener: ActionListener) -> None:
        """`listener` hears of every first answer from now on (the webhook outbox, for one)."""
        self._listeners.append(listener)

    async def answer(self, user_id: str, notification_id: str, action: str) -> ActionAnswer:
        """Record the user's answer. Raises NotAnswerable, or AlreadyAnswered (another action)."""
        note = await self._own(user_id, notification_id)
        if note.links is None or action not in note.links.action_names():
            raise NotAnswerable("the notification has no such action")
        answer = await self._store.record_action_answer(notification_id, user_id, action)
        if not answer.recorded:
            if answer.action != action:
                raise AlreadyAnswered(answer)
            return answer
        event = AnsweredAction(
            notification_id, user_id, note.type, action, answer.answered_at, note.links.sent_by
        )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("actions.listener_failed", extra={"id": notification_id})
        return answer

    async def _own(self, user_id: str, notification_id: str) -> Notification:
        notes = await self._store.get_notifications([notification_id])
        if not notes or notes[0].user_id != user_id:
            raise NotAnswerable("no such notification of this user")
        return notes[0]
