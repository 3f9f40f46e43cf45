"""Untrusted payloads and typed senders' arguments into drafts, every problem reported at once.

Three doors lead to a stored notification: an item of `POST /v1/notifications` (`parse_draft`),
`POST /v1/broadcasts` (`parse_broadcast`) and the Python service's typed senders
(`validated_draft`). All three apply the rules of `rules.notification`, field by field.
"""

from __future__ import annotations

from typing import Any, cast

from diagnoxix.models import BROADCAST_RECIPIENT, NotificationDraft, Priority
from diagnoxix.rules.fields import FieldErrors
from diagnoxix.rules.notification import (
    MAX_MESSAGE_CHARS,
    MAX_TITLE_CHARS,
    MIN_DRAFT_TTL_SECONDS,
    check_data,
    check_priority,
    check_title_message,
    check_type,
    check_user_id,
    encode_data,
    priority_problem,
    text_problem,
    type_problem,
    user_id_problem,
)
from diagnoxix.rules.requests import BROADCAST_TTL_SECONDS

DRAFT_FIELDS = frozenset({"user_id", "type", "title", "message", "data", "priority"})
BROADCAST_FIELDS = frozenset({"type", "title", "message", "data", "priority", "ttl"})


def _unknown_fields(payload: dict[str, Any], known: frozenset[str], prefix: str, errors: FieldErrors) -> bool:
    if payload.keys() <= known:
        return False
    for unknown in sorted(set(payload) - known):
        errors.add(f"{prefix}{unknown}", "is not a known field")
    return True


def _content(
    payload: dict[str, Any], prefix: str, errors: FieldErrors, default_type: str | None
) -> tuple[str, str, str, tuple[dict[str, Any], str], Priority] | None:
    """Type, title, message, data (with its JSON) and priority, or None if any is invalid.

    A missing or null message, data or priority takes its default (empty, `{}`, normal).
    """
    get = payload.get
    valid = True
    kind = get("type", default_type)
    if (problem := type_problem(kind)) is not None:
        valid = False
        errors.add(f"{prefix}type", problem)
    title = get("title")
    if (problem := text_problem(title, MAX_TITLE_CHARS, required=True)) is not None:
        valid = False
        errors.add(f"{prefix}title", problem)
    message = get("message")
    if (problem := text_problem(message, MAX_MESSAGE_CHARS, required=False)) is not None:
        valid = False
        errors.add(f"{prefix}message", problem)
    data = encode_data(get("data"))
    if isinstance(data, str):
        valid = False
        errors.add(f"{prefix}data", data)
    priority = get("priority")
    if (problem := priority_problem(priority)) is not None:
        valid = False
        errors.add(f"{prefix}priority", problem)
    if not valid or isinstance(data, str):
        return None
    # Every field passed its rule above: these are the types the rules admit.
    return (
        cast(str, kind),
        cast(str, title),
        cast("str | None", message) or "",
        data,
        cast("Priority", priority or "normal"),
    )


def parse_draft(
    payload: object, *, prefix: str = "", errors: FieldErrors, default_type: str | None = None
) -> NotificationDraft | None:
    """Parse one notification object; problems go to `errors` under `prefix`."""
    if not isinstance(payload, dict):
        errors.add(prefix.rstrip(".") or "body", "must be a JSON object")
        return None
    unknown = _unknown_fields(payload, DRAFT_FIELDS, prefix, errors)
    user_id = payload.get("user_id")
    if (problem := user_id_problem(user_id)) is not None:
        errors.add(f"{prefix}user_id", problem)
    content = _content(payload, prefix, errors, default_type)
    if unknown or problem is not None or content is None:
        return None
    kind, title, message, (data, data_json), priority = content
    return NotificationDraft(
        user_id=cast(str, user_id),
        type=kind,
        title=title,
        message=message,
        data=data,
        priority=priority,
        data_json=data_json,
    )


def parse_broadcast(payload: dict[str, Any], errors: FieldErrors) -> NotificationDraft | None:
    """A broadcast: a notification without a recipient, of type `system` unless it names one, with
    an optional `ttl` (seconds it still reaches users who connect later)."""
    unknown = _unknown_fields(payload, BROADCAST_FIELDS, "", errors)
    raw_ttl = payload.get("ttl")
    ttl = BROADCAST_TTL_SECONDS.integer(raw_ttl)
    ttl_ok = raw_ttl is None or ttl is not None
    if not ttl_ok:
        errors.add("ttl", f"must be {BROADCAST_TTL_SECONDS.text} seconds")
    content = _content(payload, "", errors, "system")
    if unknown or not ttl_ok or content is None:
        return None
    kind, title, message, (data, data_json), priority = content
    return NotificationDraft(
        user_id=BROADCAST_RECIPIENT,
        type=kind,
        title=title,
        message=message,
        data=data,
        priority=priority,
        ttl_seconds=ttl,
        data_json=data_json,
    )


def validated_draft(
    recipient: str,
    kind: str,
    title: str,
    message: str,
    data: dict[str, Any] | None,
    priority: str,
    ttl_seconds: int | None = None,
    *,
    errors: FieldErrors | None = None,
) -> NotificationDraft:
    """Check every field of a typed sender's call (adding to `errors` found earlier) and raise
    them all, or return the draft."""
    errors = errors if errors is not None else FieldErrors()
    if recipient != BROADCAST_RECIPIENT:
        check_user_id(recipient, "user_id", errors)
    check_type(kind, "type", errors)
    check_title_message({"title": title, "message": message}, "", errors)
    checked_data, data_json = check_data(data, "data", errors)
    checked_priority = check_priority(priority, "priority", errors)
    if ttl_seconds is not None and not (
        isinstance(ttl_seconds, int)
        and not isinstance(ttl_seconds, bool)
        and ttl_seconds >= MIN_DRAFT_TTL_SECONDS
    ):
        errors.add("ttl_seconds", "must be a positive number of seconds")
    if errors:
        raise errors
    return NotificationDraft(
        user_id=recipient,
        type=kind,
        title=title,
        message=message,
        data=dict(checked_data),
        priority=checked_priority,
        ttl_seconds=ttl_seconds,
        data_json=data_json,
    )
