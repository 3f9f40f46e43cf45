"""Scheduled sends: `deliver_at` and `schedule_key` on an item of `POST /v1/notifications`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from diagnoxix.rules.fields import FieldErrors

SCHEDULE_FIELDS = frozenset({"deliver_at", "schedule_key"})
# How far ahead a send may be scheduled.
MAX_SCHEDULE_AHEAD_DAYS = 365
MAX_SCHEDULE_KEY_CHARS = 128
SCHEDULE_KEY_REGEX = rf"^[A-Za-z0-9._:@-]{{1,{MAX_SCHEDULE_KEY_CHARS}}}$"
_SCHEDULE_KEY = re.compile(SCHEDULE_KEY_REGEX)
# RFC 3339 (section 5.6) with its offset: a time without one would mean a different instant to
# every server it reaches.
DELIVER_AT_REGEX = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
_DELIVER_AT = re.compile(DELIVER_AT_REGEX)
DELIVER_AT_SHAPE = "an RFC 3339 date-time with its offset, e.g. 2026-12-01T09:00:00+01:00"
SCHEDULE_KEY_SHAPE = f"1-{MAX_SCHEDULE_KEY_CHARS} of letters, digits and . _ : @ -"


def parse_deliver_at(value: object, now: datetime, path: str, errors: FieldErrors) -> datetime | None:
    """A time in the future, at most `MAX_SCHEDULE_AHEAD_DAYS` ahead of `now`; else the problem
    goes to `errors` under `path`."""
    moment = _rfc3339(value)
    if moment is None:
        errors.add(path, f"must be {DELIVER_AT_SHAPE}")
    elif moment <= now:
        errors.add(path, "must be in the future")
    elif moment > now + timedelta(days=MAX_SCHEDULE_AHEAD_DAYS):
        errors.add(path, f"must be at most {MAX_SCHEDULE_AHEAD_DAYS} days ahead")
    else:
        return moment
    return None


def _rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or not _DELIVER_AT.fullmatch(value):
        return None
    text = value.upper().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python takes at most 6 digits of a fraction: finer than a microsecond means nothing
        digits = rest[: len(rest) - 6]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[-6:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # a 31st of February, an hour 25
        return None


def schedule_key_problem(value: object) -> str | None:
    if isinstance(value, str) and _SCHEDULE_KEY.fullmatch(value):
        return None
    return f"must be {SCHEDULE_KEY_SHAPE}"
