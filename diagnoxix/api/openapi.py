"""The OpenAPI 3.1 description of the HTTP API, served at `/v1/openapi.json`.

Built from the input rules: every pattern, length, item count, enum, ttl range and page limit is
the constant in `diagnoxix.rules` the server checks with, so the two cannot drift apart. Each route
lists every status it can answer with. Tests check that the document describes exactly the served
routes, and a contract test sends it generated requests, valid and not, against a live server.
"""

from __future__ import annotations

from typing import Any

from diagnoxix.config import Settings
from diagnoxix.rules import (
    BATCH_ITEMS,
    BROADCAST_TTL_SECONDS,
    CURSOR_SEQ,
    DEFAULT_HISTORY_PAGE,
    DEFAULT_PRESENCE_PAGE,
    EPOCH_REGEX,
    HISTORY_PAGE,
    IDEMPOTENCY_KEY_REGEX,
    MAX_DATA_BYTES,
    MAX_ID_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_TITLE_CHARS,
    MAX_TYPE_CHARS,
    MAX_USER_ID_CHARS,
    MESSAGE_REGEX,
    PRESENCE_PAGE,
    PRIORITIES,
    READ_IDS,
    SENDABLE_TYPE_REGEX,
    SINCE_SEQ,
    TITLE_REGEX,
    TYPE_REGEX,
    USER_ID_REGEX,
    Bounds,
    token_ttl_seconds,
)

Schema = dict[str, Any]

# Why each error status happens; every route names the ones it can answer with.
_ERROR_REASONS = {
    400: "Malformed: the body is not JSON, or a path, query or header parameter breaks its rule",
    401: "No credentials, or ones that are not valid (unknown, revoked, expired)",
    403: "A user's connection token used for another user's notifications",
    409: "A concurrent request with the same Idempotency-Key is still being stored: retry",
    410: "What this Idempotency-Key stored has expired: send again with a new key",
    413: "The body is larger than the server accepts",
    415: "The body is not sent as Content-Type: application/json",
    422: "The JSON is well formed but breaks a rule: `details` maps each field to its problem",
    429: "This user already has the most open connections the server allows",
    503: "The database cannot answer now (shutting down, or busy): retry shortly",
}
_ERROR_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    409: "Conflict",
    410: "Gone",
    413: "TooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyConnections",
    503: "Unavailable",
}
# Statuses shared by kinds of route: those that read a JSON body; those behind an API key (checked
# against the store, so 503 too); those behind an API key or the user's own token.
_BODY = (400, 413, 415, 422)
_API_KEY = (401, 503)
_USER = (401, 403, 503)


def _error_reasons(settings: Settings) -> dict[int, str]:
    return _ERROR_REASONS | {413: f"{_ERROR_REASONS[413]} ({settings.max_body_bytes:,} bytes)"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def _body(schema: Schema) -> Schema:
    return {"required": True, **_json(schema)}


def _responses(ok: int, description: str, schema: Schema | None, *errors: int) -> Schema:
    answer: Schema = {"description": description, **(_json(schema) if schema is not None else {})}
    statuses = sorted(set(errors))
    return {
        str(ok): answer,
        **{str(s): {"$ref": f"#/components/responses/{_ERROR_NAMES[s]}"} for s in statuses},
    }


def _replayed(responses: Schema) -> Schema:
    """The 201 of a send says when it is the stored answer to an earlier request with its key."""
    responses["201"]["headers"] = {
        "Idempotent-Replayed": {
            "description": "present when this is the answer stored for an earlier request with this key",
            "schema": {"const": "true"},
        }
    }
    return responses


def _integer(bounds: Bounds, **extra: Any) -> Schema:
    return {"type": "integer", "minimum": bounds.minimum, "maximum": bounds.maximum, **extra}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _user_id() -> Schema:
    return {"type": "string", "maxLength": MAX_USER_ID_CHARS, "pattern": USER_ID_REGEX}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document for a server with these settings (the token ttl ceiling and the body size
    limit are settings)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Diagnoxix Notify",
            "version": "1",
            "description": (
                "Real-time notifications for the Diagnoxix clinic platform. Every error is"
                ' `{"error": {"code", "message", "details"}}` with a stable `code`.'
            ),
        },
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A service's dxn_… API key"},
                "userToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A user's connection token (POST /v1/tokens), for their own data",
                },
            },
            "responses": {
                _ERROR_NAMES[status]: {"description": reason, **_json(_ref("Error"))}
                for status, reason in _error_reasons(settings).items()
            },
            "schemas": _input_schemas(settings) | _output_schemas(),
        },
    }


def _paths() -> dict[str, Any]:
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    # A service's API key for any user, or the user's own connection token for themselves.
    user_auth: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    user = {"name": "user_id", "in": "path", "required": True, "schema": _user_id()}
    return {
        "/v1/ws/notifications": {
            "get": {
                "summary": "Open a notification WebSocket",
                "description": (
                    "Upgrade to a WebSocket. Credentials: subprotocol `bearer.<token>` beside"
                    " `diagnoxix.v1`, or `?token=`; `?user_id=` only in --dev mode."
                    " `since=<seq>` resumes after that seq. See docs/protocol.md."
                ),
                "parameters": [
                    _query("token", {"type": "string"}, "a connection token"),
                    _query("user_id", _user_id(), "--dev mode only: connect as this user"),
                    _query("since", _integer(SINCE_SEQ), "the last seq processed (0: from the start)"),
                    _query("epoch", {"type": "string", "pattern": EPOCH_REGEX}, "the epoch of that seq"),
                ],
                "responses": _responses(101, "Switching protocols", None, 400, 401, 403, 429),
            }
        },
        "/v1/ws/stats": {
            "get": {
                "summary": "Aggregate connection and delivery counts",
                "responses": _responses(200, "Counts", _ref("Stats")),
            }
        },
        "/v1/ws/test-notification": {
            "post": {
                "summary": "Send a test notification (open in --dev mode, an API key otherwise)",
                "security": [{}, *api_key],
                "requestBody": _body(_ref("TestNotificationInput")),
                "responses": _responses(201, "Stored", _ref("TestResult"), *_BODY, *_API_KEY),
            }
        },
        "/v1/notifications": {
            "post": {
                "summary": f"Send one notification, or a batch of up to {BATCH_ITEMS.maximum:,}",
                "security": api_key,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "Retries with the same key and body store nothing twice (24 hours)",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
                            "pattern": IDEMPOTENCY_KEY_REGEX,
                        },
                    }
                ],
                "requestBody": _body({"oneOf": [_ref("NotificationInput"), _ref("BatchInput")]}),
                "responses": _replayed(
                    _responses(
                        201,
                        "Stored (and sent to every open connection of the user)",
                        {"oneOf": [_ref("SingleResult"), _ref("BatchResult")]},
                        *_BODY,
                        *_API_KEY,
                        409,
                        410,
                    )
                ),
            }
        },
        "/v1/broadcasts": {
            "post": {
                "summary": "Send a system notification to everyone connected, and to later arrivals",
                "security": api_key,
                "requestBody": _body(_ref("BroadcastInput")),
                "responses": _responses(201, "Stored and sent", _ref("BroadcastResult"), *_BODY, *_API_KEY),
            }
        },
        "/v1/users/{user_id}/notifications": {
            "get": {
                "summary": "A user's notifications, newest first",
                "security": user_auth,
                "parameters": [
                    user,
                    _query("type", {"type": "string", "pattern": TYPE_REGEX}, "only this type"),
                    _query("unread", {"type": "boolean"}, "only unread ones"),
                    _query("limit", _integer(HISTORY_PAGE, default=DEFAULT_HISTORY_PAGE), "page size"),
                    _query("before", _integer(CURSOR_SEQ), "the previous page's next_cursor"),
                ],
                "responses": _responses(200, "A page", _ref("HistoryPage"), 400, *_USER),
            }
        },
        "/v1/users/{user_id}/notifications/read": {
            "post": {
                "summary": "Mark notifications read; every connection of the user gets the unread count",
                "security": user_auth,
                "parameters": [user],
                "requestBody": _body(_ref("ReadInput")),
                "responses": _responses(200, "Marked", _ref("ReadResult"), *_BODY, *_USER),
            }
        },
        "/v1/users/{user_id}/notifications/read-all": {
            "post": {
                "summary": "Mark all of a user's notifications read",
                "security": user_auth,
                "parameters": [user],
                "responses": _responses(200, "Marked", _ref("ReadAllResult"), 400, *_USER),
            }
        },
        "/v1/users/{user_id}/unread-count": {
            "get": {
                "summary": "How many of a user's notifications are unread",
                "security": user_auth,
                "parameters": [user],
                "responses": _responses(200, "Count", _ref("UnreadCount"), 400, *_USER),
            }
        },
        "/v1/users/{user_id}/presence": {
            "get": {
                "summary": "Whether a user is online, with how many connections, since when",
                "security": api_key,
                "parameters": [user],
                "responses": _responses(200, "Presence", _ref("Presence"), 400, *_API_KEY),
            }
        },
        "/v1/presence": {
            "get": {
                "summary": "Everyone online now, longest online first",
                "security": api_key,
                "parameters": [
                    _query("limit", _integer(PRESENCE_PAGE, default=DEFAULT_PRESENCE_PAGE), "users listed")
                ],
                "responses": _responses(200, "Online users", _ref("PresenceList"), 400, *_API_KEY),
            }
        },
        "/v1/tokens": {
            "post": {
                "summary": "Mint a connection token for a user",
                "security": api_key,
                "requestBody": _body(_ref("TokenInput")),
                "responses": _responses(201, "Token", _ref("Token"), *_BODY, *_API_KEY),
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and database check",
                "responses": _responses(200, "Healthy", _ref("Health"), 503),
            }
        },
        "/v1/openapi.json": {
            "get": {"summary": "This document", "responses": _responses(200, "OpenAPI", {"type": "object"})}
        },
    }


def _input_schemas(settings: Settings) -> dict[str, Schema]:
    priority = {"enum": [*PRIORITIES, None], "description": "null (or absent) is normal"}
    title = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TITLE_CHARS,
        "pattern": TITLE_REGEX,
        "description": "not blank; no NUL",
    }
    message = {
        "type": ["string", "null"],
        "maxLength": MAX_MESSAGE_CHARS,
        "pattern": MESSAGE_REGEX,
        "description": "null (or absent) is no message; no NUL",
    }
    data = {
        "type": ["object", "null"],
        "description": f"at most {MAX_DATA_BYTES} bytes as compact UTF-8 JSON; null (or absent) is {{}}",
    }

    def kind(default: str) -> Schema:
        return {
            "type": "string",
            "maxLength": MAX_TYPE_CHARS,
            "pattern": SENDABLE_TYPE_REGEX,
            "default": default,
            "description": "letters, digits, _ . : - (not a protocol frame's name)",
        }

    def notification(default_type: str) -> Schema:
        return {
            "type": "object",
            "required": ["user_id", "title"],
            "additionalProperties": False,
            "properties": {
                "user_id": _user_id(),
                "type": kind(default_type),
                "title": title,
                "message": message,
                "data": data,
                "priority": priority,
            },
        }

    return {
        "NotificationInput": notification("notification"),
        "TestNotificationInput": notification("test_notification"),
        "BatchInput": {
            "type": "object",
            "required": ["notifications"],
            "additionalProperties": False,
            "properties": {
                "notifications": {
                    "type": "array",
                    "minItems": BATCH_ITEMS.minimum,
                    "maxItems": BATCH_ITEMS.maximum,
                    "items": _ref("NotificationInput"),
                }
            },
        },
        "BroadcastInput": {
            "type": "object",
            "required": ["title"],
            "additionalProperties": False,
            "properties": {
                "type": kind("system"),
                "title": title,
                "message": message,
                "data": data,
                "priority": priority,
                "ttl": {
                    **_integer(BROADCAST_TTL_SECONDS),
                    "type": ["integer", "null"],
                    "description": "seconds it still reaches users who connect later (null: the default)",
                },
            },
        },
        "ReadInput": {
            "type": "object",
            "required": ["ids"],
            "additionalProperties": False,
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": READ_IDS.minimum,
                    "maxItems": READ_IDS.maximum,
                    "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                }
            },
        },
        "TokenInput": {
            "type": "object",
            "required": ["user_id"],
            "additionalProperties": False,
            "properties": {
                "user_id": _user_id(),
                "ttl": {
                    **_integer(token_ttl_seconds(settings.token_max_ttl_seconds)),
                    "type": ["integer", "null"],
                    "description": "seconds the token is valid (null: the server's default)",
                },
            },
        },
    }


def _object(properties: dict[str, Schema]) -> Schema:
    """A response object: every listed property is always present."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _output_schemas() -> dict[str, Schema]:
    moment = {"type": "string", "format": "date-time"}
    maybe_moment = {"type": ["string", "null"], "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    # What a send answers with: the notification and what became of it.
    delivery = {"type": "string", "enum": ["delivered", "sending", "queued", "broadcast"]}
    sent = {"allOf": [_ref("Notification"), _object({"delivery": delivery})]}
    return {
        "Error": _object(
            {
                "error": _object(
                    {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}
                )
            }
        ),
        "Notification": _object(
            {
                "type": {"type": "string"},
                "user_id": {"type": "string", "description": '"*" for a broadcast'},
                "title": {"type": "string"},
                "message": {"type": "string"},
                "data": {"type": "object"},
                "timestamp": moment,
                "id": {"type": "string", "format": "uuid"},
                "seq": {"type": "integer", "minimum": 1},
                "priority": {"type": "string", "enum": list(PRIORITIES)},
                "read": {"type": "boolean"},
                "delivered_at": maybe_moment,
                "read_at": maybe_moment,
                "expires_at": maybe_moment,
            }
        ),
        "SentNotification": sent,
        "TestResult": _object({"success": {"const": True}, "notification": _ref("SentNotification")}),
        # Distinct required properties: a body matches exactly one of the two.
        "SingleResult": _object({"notification": _ref("SentNotification")}),
        "BatchResult": _object(
            {"count": count, "notifications": {"type": "array", "items": _ref("SentNotification")}}
        ),
        "BroadcastResult": _object({"notification": _ref("SentNotification"), "connections": count}),
        "HistoryPage": _object(
            {
                "notifications": {"type": "array", "items": _ref("Notification")},
                "next_cursor": {
                    "type": ["integer", "null"],
                    "minimum": CURSOR_SEQ.minimum,
                    "description": "the `before` of the next page; null after the last page",
                },
            }
        ),
        "ReadResult": _object({"ids": {"type": "array", "items": {"type": "string"}}, "unread": count}),
        "ReadAllResult": _object({"count": count, "unread": count}),
        "UnreadCount": _object({"user_id": {"type": "string"}, "unread": count}),
        "Presence": _object(
            {
                "user_id": {"type": "string"},
                "online": {"type": "boolean"},
                "connections": count,
                "since": maybe_moment,
            }
        ),
        "PresenceList": _object(
            {
                "online": count,
                "users": {
                    "type": "array",
                    "items": _object(
                        {"user_id": {"type": "string"}, "connections": count, "since": maybe_moment}
                    ),
                },
            }
        ),
        "Token": _object({"token": {"type": "string"}, "user_id": {"type": "string"}, "expires_at": moment}),
        "Health": _object({"status": {"const": "ok"}}),
        "Stats": _object(
            {
                "status": {"type": "string"},
                "connections": count,
                "users_online": count,
                "notifications": _object({"stored": count, "delivered": count, "published": count}),
                "send_queue_depth": count,
                "max_rss_kib": count,
                "uptime_seconds": {"type": "number"},
            }
        ),
    }
