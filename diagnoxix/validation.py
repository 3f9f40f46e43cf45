"""Input limits and parsing of untrusted notification payloads into drafts.

Every check reports the field it concerns, so an API error can point a clinic's IT person at the
exact thing to fix. All problems of a payload are collected, not just the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

from .json_encoding import encode_json
from .models import PRIORITIES, NotificationDraft, Priority

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


def check_user_id(value: object, path: str, errors: FieldErrors) -> str:
    if not isinstance(value, str) or not value:
        errors.add(path, "is required and must be a non-empty string")
        return ""
    if not USER_ID_PATTERN.match(value):
        errors.add(path, "must be 1-128 characters of letters, digits and . _ : @ - (starting alphanumeric)")
    return value


def is_valid_user_id(value: str) -> bool:
    return bool(USER_ID_PATTERN.match(value))


def _check_text(value: object, path: str, limit: int, errors: FieldErrors, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        errors.add(path, "is required and must be a non-empty string")
        return ""
    if len(value) > limit:
        errors.add(path, f"must be at most {limit} characters (got {len(value)})")
    if "\x00" in value:
        errors.add(path, "must not contain NUL characters")
    if not _is_utf8(value):
        errors.add(path, "must be valid Unicode text (no lone surrogate escapes)")
    return value


def _is_utf8(value: str) -> bool:
    """False for a str holding a lone surrogate (JSON allows `"\\ud800"`; UTF-8 cannot carry it)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_type(value: object, path: str, errors: FieldErrors) -> str:
    if not isinstance(value, str) or not TYPE_PATTERN.match(value):
        errors.add(path, "must be 1-64 characters of letters, digits and _ . : - (starting alphanumeric)")
        return ""
    if value.lower() in RESERVED_TYPES:
        errors.add(path, f"{value!r} is reserved for protocol frames")
    return value


def check_data(value: object, path: str, errors: FieldErrors) -> tuple[dict[str, Any], str]:
    """The data object and its compact JSON (the store keeps that text, so it is encoded once)."""
    if value is None:
        return {}, "{}"
    if not isinstance(value, dict):
        errors.add(path, "must be a JSON object")
        return {}, "{}"
    try:
        encoded = encode_json(value)
    except ValueError:
        # NaN and Infinity are not JSON: a browser's JSON.parse would reject the whole frame.
        errors.add(path, "must not contain NaN or Infinity")
        return {}, "{}"
    except TypeError:  # only from Python callers: a set, a datetime...
        errors.add(path, "must contain only JSON values")
        return {}, "{}"
    if encoded.isascii():
        size = len(encoded)
    else:
        try:
            size = len(encoded.encode())
        except UnicodeEncodeError:
            errors.add(path, "must contain only valid Unicode text (no lone surrogate escapes)")
            return {}, "{}"
    if size > MAX_DATA_BYTES:
        errors.add(path, f"must encode to at most {MAX_DATA_BYTES} bytes of JSON (got {size})")
    return cast("dict[str, Any]", value), encoded


def check_priority(value: object, path: str, errors: FieldErrors) -> Priority:
    if value is None:
        return "normal"
    if value not in PRIORITIES:
        errors.add(path, f"must be one of {', '.join(PRIORITIES)}")
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
    before = len(errors.details)
    if not payload.keys() <= _DRAFT_FIELDS:
        for unknown in sorted(set(payload) - _DRAFT_FIELDS):
            errors.add(f"{prefix}{unknown}", "is not a known field")
    user_id = check_user_id(payload.get("user_id"), f"{prefix}user_id", errors)
    raw_type = payload.get("type", default_type)
    kind = check_type(raw_type, f"{prefix}type", errors)
    title, message = check_title_message(payload, prefix, errors)
    data, data_json = check_data(payload.get("data"), f"{prefix}data", errors)
    priority = check_priority(payload.get("priority"), f"{prefix}priority", errors)
    if len(errors.details) > before:
        return None
    return NotificationDraft(user_id, kind, title, message, data, priority, data_json=data_json)
