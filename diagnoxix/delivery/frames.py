"""v1 control frames: everything the server sends a v1 client besides notifications."""

from __future__ import annotations

import json


def control(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


def error(code: str, message: str, **fields: object) -> str:
    return control("error", error={"code": code, "message": message}, **fields)


def unread(count: int) -> str:
    return control("unread", count=count)
