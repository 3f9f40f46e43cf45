"""Row conversions and SQL fragments shared by the PostgreSQL store's query mixins.

Rows are asyncpg Records; the columns hold the same text as SQLite's (ISO 8601 UTC timestamps,
JSON as text), so the conversions match `store.sqlite.rows` value for value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from diagnoxix.models import ApiKey, Links, Notification, parse_timestamp
from diagnoxix.store.protocols import Correction

NOTIFICATION_COLUMNS = (
    "seq, id, user_id, type, title, message, data, priority, created_at, delivered_at, read_at, expires_at,"
    " links"
)
AUDIT_COLUMNS = "id, at, actor, action, target, details"
# Text ordered as SQLite orders it (byte by byte), whatever the database's collation.
BYTEWISE = 'COLLATE "C"'
CORRECTION_COLUMNS = "c.seq, c.id, c.notification_id, c.user_id, c.kind, c.at"
# The statement's time in our timestamp format (RFC 3339, UTC, milliseconds), taken by the
# database as SQLite's `SQLITE_NOW` is: one value for every row of a statement.
DB_NOW = "to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"


def live(param: int) -> str:
    """Nothing expired is ever served: every read of notifications carries this condition, with
    the store clock's now bound as `$param`."""
    return f"(expires_at IS NULL OR expires_at > ${param})"


def storable(ids: Iterable[str]) -> list[str]:
    """Of `ids`, those that can be ids of ours. Every id this store makes is ASCII without NUL;
    anything else (a lone surrogate, a NUL from a decoded URL) is no id of ours, and PostgreSQL
    could not even take it as a parameter."""
    return [nid for nid in ids if nid.isascii() and "\x00" not in nid]


def row_to_notification(row: Any) -> Notification:
    seq, nid, user_id, kind, title, message, data, priority, created, delivered, read, expires, links = row
    return Notification(
        seq=int(seq),
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


def row_to_api_key(row: Any) -> ApiKey:
    key_id, name, created, last_used, revoked = row[:5]
    return ApiKey(
        id=key_id,
        name=name,
        created_at=parse_timestamp(created),
        last_used_at=parse_timestamp(last_used) if last_used else None,
        revoked_at=parse_timestamp(revoked) if revoked else None,
    )


def audit_entry(row: Any) -> dict[str, Any]:
    entry_id, at, actor, action, target, details = row
    return {
        "id": int(entry_id),
        "at": at,
        "actor": actor,
        "action": action,
        "target": target,
        "details": json.loads(details),
    }


def changed(status: str) -> int:
    """The rows a statement changed, from its status tag (`UPDATE 3`, `INSERT 0 1`, `DELETE 0`)."""
    return int(status.rsplit(" ", 1)[-1])


def row_to_correction(
    row: Any, title: str | None = None, message: str | None = None, details: str | None = None
) -> Correction:
    """A correction from its `CORRECTION_COLUMNS` (and an update's words, an acknowledgement's details)."""
    seq, cid, nid, user_id, kind, at = tuple(row)[:6]
    return Correction(
        seq=int(seq),
        id=str(cid),
        notification_id=str(nid),
        user_id=str(user_id),
        kind=kind if kind in ("retracted", "acknowledged") else "updated",
        at=parse_timestamp(str(at)),
        title=title,
        message=message,
        details=json.loads(details) if details else {},
    )
