"""The OpenAPI paths of the SSE fallback: the stream itself (ws/sse.py) and the HTTP `ack` its
clients send instead of an `ack` frame (api/acks.py)."""

from __future__ import annotations

from typing import Any

from diagnoxix.api.openapi_parts import (
    BODY_ERRORS,
    USER_ERRORS,
    Schema,
    all_required,
    body,
    integer,
    query,
    ref,
    responses,
    user_id_schema,
)
from diagnoxix.rules import EPOCH_REGEX, SINCE_SEQ


def sse_schemas() -> dict[str, Schema]:
    return {"AckResult": all_required({"ids": {"type": "array", "items": {"type": "string"}}})}


def sse_paths() -> dict[str, Any]:
    user_auth: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    user = {"name": "user_id", "in": "path", "required": True, "schema": user_id_schema()}
    stream = responses(200, "", None, 400, 401, 403, 429)
    stream["200"] = {
        "description": "The v1 frames as server-sent events (one JSON frame per event; `id:` is its seq)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    return {
        "/v1/sse/notifications": {
            "get": {
                "summary": "Open a notification stream over server-sent events (the WebSocket fallback)",
                "description": (
                    "For networks whose proxies strip the WebSocket upgrade. Credentials: `?token=`"
                    " or `Authorization: Bearer <token>`; `?user_id=` only in --dev mode."
                    " `Last-Event-ID` (or `since=<seq>`) resumes after that seq. Acknowledge with"
                    " POST /v1/users/{user_id}/notifications/ack. See docs/protocol.md."
                ),
                "parameters": [
                    query("token", {"type": "string"}, "a connection token"),
                    query("user_id", user_id_schema(), "--dev mode only: connect as this user"),
                    query("since", integer(SINCE_SEQ), "the last seq processed (0: from the start)"),
                    query("epoch", {"type": "string", "pattern": EPOCH_REGEX}, "the epoch of that seq"),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "the last event id received (a seq); wins over `since`",
                        "schema": integer(SINCE_SEQ),
                    },
                ],
                "responses": stream,
            }
        },
        "/v1/users/{user_id}/notifications/ack": {
            "post": {
                "summary": "Acknowledge notifications delivered (what an `ack` frame does on a WebSocket)",
                "security": user_auth,
                "parameters": [user],
                "requestBody": body(ref("ReadInput")),
                "responses": responses(200, "Acknowledged", ref("AckResult"), *BODY_ERRORS, *USER_ERRORS),
            }
        },
    }
