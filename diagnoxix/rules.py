"""Input limits and parsing of untrusted notification payloads into drafts.

Every check reports the field it concerns, so an API error can point a clinic's IT person at the
exact thing to fix. All problems of a payload are collected, not just the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

from diagnoxix.json_encoding import encode_json
from diagnoxix.models import PRIORITIES, NotificationDraft, Priority

# User ids come from the clinic's systems (UUIDs, MRN-like ids, emails): a safe, printable charset.
# It excludes "*", the broadcast recipient, and anything that would need escaping in a URL path.
USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
# Notification types are identifiers such as `appointment_confirmed` or `CUSTOM_TYPE`.
TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# v1 control frames share the `type` field with notifications; a notification may not pose as one.
RESERVED_TYPES = frozenset(
    {
        "welcome",
        "pong",
        "ping",
        "error",
        "hello",
        "ack",
        "read",
        "read_all",
        "history",
        "unread",
        "refresh",
        "refreshed",
        "token",
        "presence",
    }
)
# Limits chosen so a frame stays a few KiB: a notification is a pointer to the record, not the record.
MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 4000
MAX_DATA_BYTES = 16 * 1024
MAX_BATCH = 1000


@dataclass
class FieldErrors(Exception):
    """One or more fields of a payload are invalid; `details` maps field path to the problem."""

    details: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, problem: str) -> None:
        self.details.setdefault(path, problem)

    def __bool__(self) -> bool:
        return bool(self.details)

    def __str__(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.details.items())


# Each rule is a function returning the problem with a value, or None: the check_* functions add
# it under a field's path, and `parse_draft` builds a path only for a field that has a problem (it
# runs for every item of a batch of a thousand).
_USER_ID_REQUIRED = "is required and must be a non-empty string"
_USER_ID_SHAPE = "must be 1-128 characters of letters, digits and . _ : @ - (starting alphanumeric)"
_TYPE_SHAPE = "must be 1-64 characters of letters, digits and _ . : - (starting alphanumeric)"
_TEXT_REQUIRED = "is required and must be a non-empty string"
_PRIORITY_CHOICES = f"must be one of {', '.join(PRIORITIES)}"


def _user_id_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return _USER_ID_REQUIRED
    if not USER_ID_PATTERN.match(value):
        return _USER_ID_SHAPE
    return None


def check_user_id(value: object, path: str, errors: FieldErrors) -> str:
    problem = _user_id_problem(value)
    if problem is not None:
        errors.add(path, problem)
    return value if isinstance(value, str) else ""


def is_valid_user_id(value: str) -> bool:
    return bool(USER_ID_PATTERN.match(value))


def _text_problem(value: object, limit: int, *, required: bool) -> str | None:
    """What is wrong with a title or message first, if anything."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        return _TEXT_REQUIRED
    if len(value) > limit:
        return f"must be at most {limit} characters (got {len(value)})"
    if "\x00" in value:
        return "must not contain NUL characters"
    if not _is_utf8(value):
        return "must be valid Unicode text (no lone surrogate escapes)"
    return None


def _check_text(value: object, path: str, limit: int, errors: FieldErrors, *, required: bool) -> str:
    problem = _text_problem(value, limit, required=required)
    if problem is not None:
        errors.add(path, problem)
    return "" if not isinstance(value, str) or problem == _TEXT_REQUIRED else value


def _is_utf8(value: str) -> bool:
    """False for a str holding a lone surrogate (JSON allows `"\\ud800"`; UTF-8 cannot carry it)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _type_problem(value: object) -> str | None:
    if not isinstance(value, str) or not TYPE_PATTERN.match(value):
        return _TYPE_SHAPE
    if value.lower() in RESERVED_TYPES:
        return f"{value!r} is reserved for protocol frames"
    return None


def check_type(value: object, path: str, errors: FieldErrors) -> str:
    problem = _type_problem(value)
    if problem is not None:
        errors.add(path, problem)
        return "" if problem == _TYPE_SHAPE else cast(str, value)
    return cast(str, value)


def _encode_data(value: object) -> tuple[dict[str, Any], str] | str:
    """The data object and its compact JSON (the store keeps that text, so it is encoded once),
    or the problem with it."""
    if value is None:
        return {}, "{}"
    if not isinstance(value, dict):
        return "must be a JSON object"
    try:
        encoded = encode_json(value)
    except ValueError:
        # NaN and Infinity are not JSON: a browser's JSON.parse would reject the whole frame.
        return "must not contain NaN or Infinity"
    except TypeError:  # only from Python callers: a set, a datetime...
        return "must contain only JSON values"
    if encoded.isascii():
        size = len(encoded)
    else:
        try:
            size = len(encoded.encode())
        except UnicodeEncodeError:
            return "must contain only valid Unicode text (no lone surrogate escapes)"
    if size > MAX_DATA_BYTES:
        return f"must encode to at most {MAX_DATA_BYTES} bytes of JSON (got {size})"
    return cast("dict[str, Any]", value), encoded


def check_data(value: object, path: str, errors: FieldErrors) -> tuple[dict[str, Any], str]:
    """The data object and its compact JSON (the store keeps that text, so it is encoded once)."""
    result = _encode_data(value)
    if isinstance(result, str):
        errors.add(path, result)
        return {}, "{}"
    return result


def check_priority(value: object, path: str, errors: FieldErrors) -> Priority:
    if value is None:
        return "normal"
    if value not in PRIORITIES:
        errors.add(path, _PRIORITY_CHOICES)
        return "normal"
    return cast("Priority", value)


def check_title_message(payload: dict[str, Any], prefix: str, errors: FieldErrors) -> tuple[str, str]:
    title = _check_text(payload.get("title"), f"{prefix}title", MAX_TITLE_CHARS, errors, required=True)
    message = _check_text(
        payload.get("message"), f"{prefix}message", MAX_MESSAGE_CHARS, errors, required=False
    )
    return title, message


_DRAFT_FIELDS = frozenset({"user_id", "type", "title", "message", "data", "priority"})


def parse_draft(
    payload: object, *, prefix: str = "", errors: FieldErrors, default_type: str | None = None
) -> NotificationDraft | None:
    """Parse one notification object; problems go to `errors` under `prefix`."""
    if not isinstance(payload, dict):
        errors.add(prefix.rstrip(".") or "body", "must be a JSON object")
        return None
    valid = True
    if not payload.keys() <= _DRAFT_FIELDS:
        valid = False
        for unknown in sorted(set(payload) - _DRAFT_FIELDS):
            errors.add(f"{prefix}{unknown}", "is not a known field")
    get = payload.get
    user_id = get("user_id")
    if (problem := _user_id_problem(user_id)) is not None:
        valid = False
        errors.add(f"{prefix}user_id", problem)
    kind = get("type", default_type)
    if (problem := _type_problem(kind)) is not None:
        valid = False
        errors.add(f"{prefix}type", problem)
    title = get("title")
    if (problem := _text_problem(title, MAX_TITLE_CHARS, required=True)) is not None:
        valid = False
        errors.add(f"{prefix}title", problem)
    message = get("message")
    if (problem := _text_problem(message, MAX_MESSAGE_CHARS, required=False)) is not None:
        valid = False
        errors.add(f"{prefix}message", problem)
    data = _encode_data(get("data"))
    if isinstance(data, str):
        valid = False
        errors.add(f"{prefix}data", data)
    priority = get("priority")
    if priority is None:
        priority = "normal"
    elif priority not in PRIORITIES:
        valid = False
        errors.add(f"{prefix}priority", _PRIORITY_CHOICES)
    if not valid or isinstance(data, str):
        return None
    # Every field passed its rule above: these are the types the rules admit.
    return NotificationDraft(
        cast(str, user_id),
        cast(str, kind),
        cast(str, title),
        cast("str | None", message) or "",
        data[0],
        cast("Priority", priority),
        data_json=data[1],
    )
