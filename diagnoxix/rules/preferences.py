"""A user's channel preferences: which channels beyond the socket they want, per category, and the
quiet hours (in their own time zone) during which only critical notifications go beyond the socket.

A notification's category is its type (`appointment_confirmed`, `lab_result`...); `*` stands for
every category the user has not named. The socket is not a channel here: an open page always gets
its frames. Critical notifications (priority `critical`, or a type the clinic marks critical in
`DIAGNOXIX_CRITICAL_CATEGORIES`) go on every channel, at any hour: a user cannot switch them off.

Pure rules: the store keeps what `encode` writes, the API answers `to_api`, and the channels ask
`allows` before anything leaves the server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from diagnoxix.rules.fields import FieldErrors
from diagnoxix.rules.notification import is_type_name

# The channels a user chooses (the socket always gets its frames).
CHANNELS = ("push", "webhook")
EVERY_CATEGORY = "*"
# At most this many categories named per user (each a notification type).
MAX_CATEGORIES = 50
FIELDS = frozenset({"time_zone", "quiet_hours", "channels"})
CLOCK_TIME_REGEX = "^([01][0-9]|2[0-3]):([0-5][0-9])$"
_CLOCK_TIME = re.compile(CLOCK_TIME_REGEX)


class TimeZones:
    """The IANA time zone names this machine knows (its tz database, or the `tzdata` package),
    read on first use: reading them takes a quarter of a second, so once per process."""

    def __init__(self) -> None:
        self._names: frozenset[str] | None = None

    @property
    def names(self) -> frozenset[str]:
        if self._names is None:
            self._names = frozenset(available_timezones())
        return self._names

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names


@dataclass(frozen=True, slots=True)
class Preferences:
    """What one user chose. Without a record every channel is on and there are no quiet hours."""

    time_zone: str = "UTC"
    # Minutes after midnight, [start, end): a span over midnight has end < start.
    quiet_hours: tuple[int, int] | None = None
    # Category (a type, or `*`) -> channel -> on. What is not named is on.
    channels: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)


DEFAULTS = Preferences()


def allows(
    prefs: Preferences | None,
    *,
    channel: str,
    category: str,
    priority: str,
    at: datetime,
    critical_categories: Collection[str],
) -> bool:
    """May a notification of `category` and `priority` go out on `channel` at `at`?"""
    if priority == "critical" or category in critical_categories:
        return True
    prefs = prefs or DEFAULTS
    chosen = prefs.channels.get(category, {}).get(channel)
    if chosen is None:
        chosen = prefs.channels.get(EVERY_CATEGORY, {}).get(channel, True)
    if not chosen:
        return False
    return not in_quiet_hours(prefs, at)


def in_quiet_hours(prefs: Preferences, at: datetime) -> bool:
    """Is `at` (an aware datetime) inside the user's quiet hours, on their own clock?"""
    if prefs.quiet_hours is None:
        return False
    local = at.astimezone(_zone(prefs.time_zone))
    minute = local.hour * 60 + local.minute
    start, end = prefs.quiet_hours
    return start <= minute < end if start < end else minute >= start or minute < end


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # stored valid; the system's tz data changed since
        return ZoneInfo("UTC")


def parse_preferences(
    payload: dict[str, Any],
    errors: FieldErrors,
    *,
    critical_categories: Collection[str],
    time_zones: Container[str],
) -> Preferences | None:
    """A `PUT` body: the whole of a user's preferences (what it leaves out is the default)."""
    for name in sorted(set(payload) - FIELDS):
        errors.add(name, "is not a known field")
    time_zone = payload.get("time_zone", "UTC")
    if not isinstance(time_zone, str) or time_zone not in time_zones:
        errors.add("time_zone", "must be an IANA time zone name such as Europe/Berlin")
    quiet = _parse_quiet_hours(payload.get("quiet_hours"), errors)
    channels = _parse_channels(payload.get("channels", {}), errors, critical_categories)
    if errors:
        return None
    assert isinstance(time_zone, str)
    return Preferences(time_zone=time_zone, quiet_hours=quiet, channels=channels)


def _parse_quiet_hours(value: object, errors: FieldErrors) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.add("quiet_hours", 'must be null or {"start": "HH:MM", "end": "HH:MM"}')
        return None
    for name in sorted(set(value) - {"start", "end"}):
        errors.add(f"quiet_hours.{name}", "is not a known field")
    minutes: list[int] = []
    for name in ("start", "end"):
        raw = value.get(name)
        match = _CLOCK_TIME.fullmatch(raw) if isinstance(raw, str) else None
        if match is None:
            errors.add(f"quiet_hours.{name}", "must be a time of day as HH:MM (00:00 to 23:59)")
            continue
        minutes.append(int(match[1]) * 60 + int(match[2]))
    if len(minutes) != 2 or minutes[0] == minutes[1]:  # an empty span: never quiet
        return None
    return minutes[0], minutes[1]


def _parse_channels(
    value: object, errors: FieldErrors, critical_categories: Collection[str]
) -> dict[str, dict[str, bool]]:
    if not isinstance(value, dict):
        errors.add("channels", 'must be an object: category -> {"push": bool, "webhook": bool}')
        return {}
    if len(value) > MAX_CATEGORIES:
        errors.add("channels", f"names at most {MAX_CATEGORIES} categories")
        return {}
    channels: dict[str, dict[str, bool]] = {}
    for category, chosen in value.items():
        path = f"channels.{category}"
        if category != EVERY_CATEGORY and not is_type_name(category):
            errors.add("channels", f"{category!r} is not a category (a notification type, or *)")
            continue
        if not isinstance(chosen, dict) or not chosen:
            errors.add(path, 'must be an object such as {"push": false}')
            continue
        choice: dict[str, bool] = {}
        for channel, on in chosen.items():
            if channel not in CHANNELS:
                errors.add(f"{path}.{channel}", f"is not a channel (one of {', '.join(CHANNELS)})")
            elif not isinstance(on, bool):
                errors.add(f"{path}.{channel}", "must be true or false")
            elif not on and category in critical_categories:
                errors.add(f"{path}.{channel}", "is a critical category: it cannot be switched off")
            else:
                choice[channel] = on
        channels[category] = choice
    return channels


def to_api(prefs: Preferences, critical_categories: Collection[str]) -> dict[str, Any]:
    """The answer of `GET` (and of `PUT`): what the user chose, and what they cannot change."""
    quiet = prefs.quiet_hours
    return {
        "time_zone": prefs.time_zone,
        "quiet_hours": None if quiet is None else {"start": _clock(quiet[0]), "end": _clock(quiet[1])},
        "channels": {category: dict(chosen) for category, chosen in sorted(prefs.channels.items())},
        "critical_categories": sorted(critical_categories),
    }


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def encode(prefs: Preferences) -> str:
    """What the store keeps (JSON text)."""
    return json.dumps(
        {"time_zone": prefs.time_zone, "quiet_hours": prefs.quiet_hours, "channels": prefs.channels},
        sort_keys=True,
    )


def decode(text: str) -> Preferences:
    """What the store kept; anything it cannot read (a hand-edited row) reads as the defaults."""
    try:
        raw = json.loads(text)
        quiet = raw.get("quiet_hours")
        return Preferences(
            time_zone=str(raw.get("time_zone") or "UTC"),
            quiet_hours=None if quiet is None else (int(quiet[0]), int(quiet[1])),
            channels={
                str(category): {str(ch): bool(on) for ch, on in chosen.items()}
                for category, chosen in dict(raw.get("channels") or {}).items()
            },
        )
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return DEFAULTS
