"""What one notification may hold: recipient, type, title, message, data, priority, references.

Each rule is a function returning the problem with a value, or None: the check_* functions add it
under a field's path, and the draft parsers build a path only for a field that has a problem (they
run for every item of a batch of a thousand).

Patterns are written as the OpenAPI document states them (`^...$`, every character class spelled
out) and are matched here with `fullmatch`: Python's `$` also matches before a final newline, and
`\\s` means different sets in Python, ECMA-262 and Rust, so neither is left to an engine to read.
"""

from __future__ import annotations

import re
from typing import Any, cast

from diagnoxix.json_encoding import encode_json
from diagnoxix.models import PRIORITIES, Priority
from diagnoxix.rules.fields import Bounds, FieldErrors

__all__ = ["PRIORITIES"]

# User ids come from the clinic's systems (UUIDs, MRN-like ids, emails): a safe, printable charset,
# 128 characters (an email address fits). It excludes "*", the broadcast recipient, and anything
# that would need escaping in a URL path.
MAX_USER_ID_CHARS = 128
USER_ID_REGEX = rf"^[A-Za-z0-9][A-Za-z0-9._:@-]{{0,{MAX_USER_ID_CHARS - 1}}}$"
USER_ID_PATTERN = re.compile(USER_ID_REGEX)
USER_ID_SHAPE = f"1-{MAX_USER_ID_CHARS} characters of letters, digits and . _ : @ - (starting alphanumeric)"
# Notification types are identifiers such as `appointment_confirmed` or `CUSTOM_TYPE`; 64
# characters name any event without becoming a sentence.
MAX_TYPE_CHARS = 64
TYPE_REGEX = rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_TYPE_CHARS - 1}}}$"
TYPE_PATTERN = re.compile(TYPE_REGEX)
# v1 control frames share the `type` field with notifications; a notification may not pose as one
# (in any letter case: clients compare types loosely).
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
        "retracted",
        "updated",
    }
)


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


# A type a notification may be sent with: the type's shape, and none of the reserved names.
SENDABLE_TYPE_REGEX = (
    "^(?!(?:" + "|".join(_any_case(t) for t in sorted(RESERVED_TYPES)) + ")$)" + TYPE_REGEX.removeprefix("^")
)

# Limits chosen so a frame stays a few KiB: a notification is a pointer to the record, not the
# record. A title is one line on a lock screen; a message a short paragraph.
MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 4000
# 16 KiB of JSON: ids and labels for the app to fetch the record with, and a frame that still fits
# a client's 16 KiB frame budget when echoed back in a history page.
MAX_DATA_BYTES = 16 * 1024
# A batch commits in one transaction: a thousand is the largest a clinic's nightly reminder run
# needs per request, and its reply (a thousand notifications) stays a few MB.
BATCH_ITEMS = Bounds(1, 1000)
# Reference ids (appointment, analysis) and test names given to the typed senders are short
# identifiers, not documents.
MAX_REFERENCE_CHARS = 128
# A draft's own lifetime, from Python callers: any positive number of seconds (the HTTP routes that
# take a ttl have narrower ranges, see `rules.requests`).
MIN_DRAFT_TTL_SECONDS = 1

# Whitespace as `str.isspace` (and so `str.strip`) knows it. A title of only these says nothing.
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# NUL is refused in text: C string APIs downstream (notification centres, SMS gateways) cut at it.
# A title has at least one character that is neither; a message may be empty.
TITLE_REGEX = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
MESSAGE_REGEX = r"^[^\x00]*$"

_USER_ID_REQUIRED = "is required and must be a non-empty string"
_USER_ID_SHAPE = f"must be {USER_ID_SHAPE}"
_TYPE_SHAPE = f"must be 1-{MAX_TYPE_CHARS} characters of letters, digits and _ . : - (starting alphanumeric)"
_TEXT_REQUIRED = "is required and must be a non-empty string"
_PRIORITY_CHOICES = f"must be one of {', '.join(PRIORITIES)}"


def is_valid_user_id(value: str) -> bool:
    return USER_ID_PATTERN.fullmatch(value) is not None


def is_type_name(value: object) -> bool:
    """A type's shape, reserved names included (what a filter by type may name)."""
    return isinstance(value, str) and TYPE_PATTERN.fullmatch(value) is not None


def user_id_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return _USER_ID_REQUIRED
    if not is_valid_user_id(value):
        return _USER_ID_SHAPE
    return None


def check_user_id(value: object, path: str, errors: FieldErrors) -> str:
    problem = user_id_problem(value)
    if problem is not None:
        errors.add(path, problem)
    return value if isinstance(value, str) else ""


def text_problem(value: object, limit: int, *, required: bool) -> str | None:
    """What is wrong with a title or message first, if anything (None is no message)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        return _TEXT_REQUIRED
    if len(value) > limit:
        return f"must be at most {limit} characters (got {len(value)})"
    if "\x00" in value:
        return "must not contain NUL characters"
    if not is_utf8(value):
        return "must be valid Unicode text (no lone surrogate escapes)"
    return None


def is_utf8(value: str) -> bool:
    """False for a str holding a lone surrogate (JSON allows `"\\ud800"`; UTF-8 cannot carry it)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_title_message(payload: dict[str, Any], prefix: str, errors: FieldErrors) -> tuple[str, str]:
    title, message = payload.get("title"), payload.get("message")
    if (problem := text_problem(title, MAX_TITLE_CHARS, required=True)) is not None:
        errors.add(f"{prefix}title", problem)
    if (problem := text_problem(message, MAX_MESSAGE_CHARS, required=False)) is not None:
        errors.add(f"{prefix}message", problem)
    return (
        title if isinstance(title, str) else "",
        message if isinstance(message, str) else "",
    )


def type_problem(value: object) -> str | None:
    if not is_type_name(value):
        return _TYPE_SHAPE
    if cast(str, value).lower() in RESERVED_TYPES:
        return f"{value!r} is reserved for protocol frames"
    return None


def check_type(value: object, path: str, errors: FieldErrors) -> str:
    problem = type_problem(value)
    if problem is not None:
        errors.add(path, problem)
    return value if isinstance(value, str) else ""


def encode_data(value: object) -> tuple[dict[str, Any], str] | str:
    """The data object and its compact JSON (the store keeps that text, so it is encoded once),
    or the problem with it. No data (None) is an empty object."""
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
    result = encode_data(value)
    if isinstance(result, str):
        errors.add(path, result)
        return {}, "{}"
    return result


def priority_problem(value: object) -> str | None:
    """None is the default priority."""
    return None if value is None or value in PRIORITIES else _PRIORITY_CHOICES


def check_priority(value: object, path: str, errors: FieldErrors) -> Priority:
    if (problem := priority_problem(value)) is not None:
        errors.add(path, problem)
        return "normal"
    return cast("Priority", value or "normal")
