"""What a correction may say: a retraction's reason, an update's new words and reason.

Over HTTP (`POST /v1/notifications/{id}/retract`, `PATCH /v1/notifications/{id}`) and from the
dashboard alike. The reason is required and goes to the audit log only: it is never sent to a
client, and never logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from diagnoxix.rules.fields import FieldErrors
from diagnoxix.rules.notification import MAX_MESSAGE_CHARS, MAX_TITLE_CHARS, text_problem
from diagnoxix.rules.requests import MAX_ID_CHARS

# Why a notification was corrected, in a sentence ("sent to the wrong patient"): an audit entry,
# not a document.
MAX_REASON_CHARS = 500
RETRACT_FIELDS = frozenset({"reason"})
UPDATE_FIELDS = frozenset({"title", "message", "reason"})
# A notification id in a path: every id we make (a UUID) fits, and nothing that a URL would
# have to escape.
PATH_ID_REGEX = f"^[A-Za-z0-9._:-]{{1,{MAX_ID_CHARS}}}$"
_ID = re.compile(PATH_ID_REGEX)


@dataclass(frozen=True, slots=True)
class Update:
    title: str | None
    message: str | None
    reason: str


def is_notification_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def check_reason(payload: dict[str, Any], errors: FieldErrors) -> str:
    reason = payload.get("reason")
    if (problem := text_problem(reason, MAX_REASON_CHARS, required=True)) is not None:
        errors.add("reason", problem)
    return reason if isinstance(reason, str) else ""


def _unknown(payload: dict[str, Any], known: frozenset[str], errors: FieldErrors) -> None:
    for name in sorted(set(payload) - known):
        errors.add(name, "is not a known field")


def parse_retraction(payload: dict[str, Any], errors: FieldErrors) -> str:
    """The reason of `{"reason"}`; problems go to `errors`."""
    _unknown(payload, RETRACT_FIELDS, errors)
    return check_reason(payload, errors)


def parse_update(payload: dict[str, Any], errors: FieldErrors) -> Update:
    """`{"title"?, "message"?, "reason"}` with at least one of title and message, each under the
    rules of a sent notification (a title is not blank; a message may be empty)."""
    _unknown(payload, UPDATE_FIELDS, errors)
    title, message = payload.get("title"), payload.get("message")
    if "title" in payload and (problem := text_problem(title, MAX_TITLE_CHARS, required=True)) is not None:
        errors.add("title", problem)
    if "message" in payload:
        problem = (
            "must be a string"
            if message is None
            else text_problem(message, MAX_MESSAGE_CHARS, required=False)
        )
        if problem is not None:
            errors.add("message", problem)
    if "title" not in payload and "message" not in payload:
        errors.add("title", "title or message is required: the new words")
    reason = check_reason(payload, errors)
    return Update(
        title if isinstance(title, str) else None,
        message if isinstance(message, str) else None,
        reason,
    )
