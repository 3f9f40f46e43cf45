"""Row conversions and SQL fragments shared by the SQLite store's modules."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from diagnoxix.models import ApiKey, Links, Notification, parse_timestamp
from diagnoxix.store.sqlite.batch import NOTIFICATION_COLUMNS

# SQLite caps bound parameters per statement; id lists are queried in chunks of this size.
ID_CHUNK = 500
# The statement's time in our timestamp format (RFC 3339, UTC, milliseconds), computed by SQLite:
# one value for every row of a statement.
SQLITE_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
# Nothing expired is ever served: every read of notifications carries this condition.
LIVE = "(expires_at IS NULL OR expires_at > ?)"


def row_to_notification(row: sqlite3.Row | tuple[Any, ...]) -> Notification:
    seq, nid, user_id, kind, title, message, data, priority, created, delivered, read, expires, links = row
    return Notification(
        seq=seq,
        id=nid,
        user_id=user_id,
        type=kind,
        title=title,
        message=message,
        data=json.loads(data),
        priority=priority,
        created_at=parse_timestamp(created),
        delivered_at=parse_timestamp(delivered) if delivered else None,
        read_at=parse_timestamp(read) if read else None,
        expires_at=parse_timestamp(expires) if expires else None,
        links=Links.from_stored(links),
    )


def newest_first(conditions: Sequence[str]) -> str:
    """Notifications matching every condition (constant SQL; values are bound), newest first, up
    to a limit bound as the last parameter."""
    return (
        f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE {' AND '.join(conditions)}"
        " ORDER BY seq DESC LIMIT ?"
    )


def row_to_api_key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, created, last_used, revoked = row
    return ApiKey(
        id=key_id,
        name=name,
        created_at=parse_timestamp(created),
        last_used_at=parse_timestamp(last_used) if last_used else None,
        revoked_at=parse_timestamp(revoked) if revoked else None,
    )


def audit_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "at", "actor", "action", "target", "details")
    return dict(zip(keys, (*row[:5], json.loads(row[5])), strict=True))


def chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i : i + ID_CHUNK]) for i in range(0, len(ids), ID_CHUNK)]
