"""v1 control frames: everything the server sends a v1 client besides notifications."""

from __future__ import annotations

import json

from diagnoxix.models import format_timestamp
from diagnoxix.store.protocols import Correction


def control(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


def error(code: str, message: str, **fields: object) -> str:
    return control("error", error={"code": code, "message": message}, **fields)


def unread(count: int) -> str:
    return control("unread", count=count)


def correction(fix: Correction) -> str | None:
    """A `retracted`, `updated` or `acknowledged` frame (docs/protocol.md), or None for an update whose
    notification is gone since (retracted or expired): nothing of it may be served."""
    common: dict[str, object] = {
        "id": fix.notification_id,
        "user_id": fix.user_id,
        "seq": fix.seq,
        "corrected_at": format_timestamp(fix.at),
    }
    if fix.kind == "retracted":
        return control("retracted", **common)
    if fix.kind == "acknowledged":
        # A critical item was acknowledged (docs/critical.md): this copy is closed.
        del common["corrected_at"]
        return control("acknowledged", **common, acknowledged_at=format_timestamp(fix.at), **fix.details)
    if fix.title is None:
        return None
    return control("updated", **common, title=fix.title, message=fix.message or "")
