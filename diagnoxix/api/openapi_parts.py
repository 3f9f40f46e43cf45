"""The pieces the OpenAPI document is built of: error statuses, parameter and body helpers, and
the component schemas, each from the rule the server checks with (`diagnoxix.rules`)."""

from __future__ import annotations

from typing import Any

from diagnoxix.config import Settings
from diagnoxix.rules import (
    BATCH_ITEMS,
    BROADCAST_TTL_SECONDS,
    CURSOR_SEQ,
    ID_REGEX,
    MAX_DATA_BYTES,
    MAX_DEVICES_LISTED,
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_TITLE_CHARS,
    MAX_TYPE_CHARS,
    MAX_USER_ID_CHARS,
    MESSAGE_REGEX,
    PRIORITIES,
    READ_IDS,
    SENDABLE_TYPE_REGEX,
    TITLE_REGEX,
    TOKEN_ID_REGEX,
    USER_ID_REGEX,
    Bounds,
    token_ttl_seconds,
)

Schema = dict[str, Any]

# Why each error status happens; every route names the ones it can answer with.
ERROR_REASONS = {
    400: "Malformed: the body is not JSON, or a path, query or header parameter breaks its rule",
    401: "No credentials, or ones that are not valid (unknown, revoked, expired)",
    403: "A user's connection token used for another user's notifications or devices",
    404: "No such record (a device: this user has no device with that token id)",
    409: "A concurrent request with the same Idempotency-Key is still being stored: retry",
    410: "What this Idempotency-Key stored has expired: send again with a new key",
    413: "The body is larger than the server accepts",
    415: "The body is not sent as Content-Type: application/json",
    422: "The JSON is well formed but breaks a rule: `details` maps each field to its problem",
    429: (
        "Too many: open connections of this user or from this address, requests without an API key"
        " from this address, or failed credentials from this address; see Retry-After"
    ),
    503: "The database cannot answer now (shutting down, or busy): retry shortly",
}
ERROR_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    413: "TooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooMany",
    503: "Unavailable",
}
# Statuses shared by kinds of route: those that read a JSON body; those behind an API key (checked
# against the store, so 503 too); those behind an API key or the user's own token.
BODY_ERRORS = (400, 413, 415, 422)
API_KEY_ERRORS = (401, 503)
USER_ERRORS = (401, 403, 503)


def error_reasons(settings: Settings) -> dict[int, str]:
    return ERROR_REASONS | {413: f"{ERROR_REASONS[413]} ({settings.max_body_bytes:,} bytes)"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def body(schema: Schema) -> Schema:
    return {"required": True, **json_content(schema)}


def responses(ok: int, description: str, schema: Schema | None, *errors: int) -> Schema:
    answer: Schema = {"description": description, **(json_content(schema) if schema is not None else {})}
    # Any route may meet a limit at the edge (connections or requests per client address).
    statuses = sorted({*errors, 429})
    return {
        str(ok): answer,
        **{str(s): {"$ref": f"#/components/responses/{ERROR_NAMES[s]}"} for s in statuses},
    }


def replayed(responses: Schema) -> Schema:
    """The 201 of a send says when it is the stored answer to an earlier request with its key."""
    responses["201"]["headers"] = {
        "Idempotent-Replayed": {
            "description": "present when this is the answer stored for an earlier request with this key",
            "schema": {"const": "true"},
        }
    }
    return responses


def integer(bounds: Bounds, **extra: Any) -> Schema:
    return {"type": "integer", "minimum": bounds.minimum, "maximum": bounds.maximum, **extra}


def query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def user_id_schema() -> Schema:
    return {"type": "string", "maxLength": MAX_USER_ID_CHARS, "pattern": USER_ID_REGEX}


def input_schemas(settings: Settings) -> dict[str, Schema]:
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
                "user_id": user_id_schema(),
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
                    # In its own words or typed: `api.openapi_kinds`.
                    "items": ref("NotificationItem"),
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
                    **integer(BROADCAST_TTL_SECONDS),
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
                    "items": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_ID_CHARS,
                        "pattern": ID_REGEX,
                    },
                }
            },
        },
        "TokenInput": {
            "type": "object",
            "required": ["user_id"],
            "additionalProperties": False,
            "properties": {
                "user_id": user_id_schema(),
                "ttl": {
                    **integer(token_ttl_seconds(settings.token_max_ttl_seconds)),
                    "type": ["integer", "null"],
                    "description": "seconds the token is valid (null: the server's default)",
                },
            },
        },
    }


def all_required(properties: dict[str, Schema]) -> Schema:
    """A response object: every listed property is always present."""
    return {"type": "object", "required": list(properties), "properties": properties}


def output_schemas() -> dict[str, Schema]:
    moment = {"type": "string", "format": "date-time"}
    maybe_moment = {"type": ["string", "null"], "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    # What a send answers with: the notification and what became of it.
    delivery = {"type": "string", "enum": ["delivered", "sending", "queued", "broadcast"]}
    sent = {"allOf": [ref("Notification"), all_required({"delivery": delivery})]}
    return {
        "Error": all_required(
            {
                "error": all_required(
                    {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}
                )
            }
        ),
        "Notification": all_required(
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
        "TestResult": all_required({"success": {"const": True}, "notification": ref("SentNotification")}),
        # Distinct required properties: a body matches exactly one of the two.
        "SingleResult": all_required({"notification": ref("SentNotification")}),
        "BatchResult": all_required(
            {"count": count, "notifications": {"type": "array", "items": ref("SentNotification")}}
        ),
        "BroadcastResult": all_required({"notification": ref("SentNotification"), "connections": count}),
        "HistoryPage": all_required(
            {
                "notifications": {"type": "array", "items": ref("Notification")},
                "next_cursor": {
                    "type": ["integer", "null"],
                    "minimum": CURSOR_SEQ.minimum,
                    "description": "the `before` of the next page; null after the last page",
                },
            }
        ),
        "ReadResult": all_required({"ids": {"type": "array", "items": {"type": "string"}}, "unread": count}),
        "ReadAllResult": all_required({"count": count, "unread": count}),
        "UnreadCount": all_required({"user_id": {"type": "string"}, "unread": count}),
        "Presence": all_required(
            {
                "user_id": {"type": "string"},
                "online": {"type": "boolean"},
                "connections": count,
                "since": maybe_moment,
            }
        ),
        "PresenceList": all_required(
            {
                "online": count,
                "users": {
                    "type": "array",
                    "items": all_required(
                        {"user_id": {"type": "string"}, "connections": count, "since": maybe_moment}
                    ),
                },
            }
        ),
        "Token": all_required(
            {
                "token": {"type": "string"},
                "user_id": {"type": "string"},
                "expires_at": moment,
                "token_id": {"type": "string", "pattern": TOKEN_ID_REGEX},
            }
        ),
        "Device": all_required(
            {
                "token_id": {"type": "string", "pattern": TOKEN_ID_REGEX},
                "created_at": moment,
                "expires_at": moment,
                "last_seen_at": maybe_moment,
                "user_agent": {"type": ["string", "null"]},
                "revoked_at": maybe_moment,
            }
        ),
        "DeviceList": all_required(
            {
                "user_id": {"type": "string"},
                "devices": {"type": "array", "maxItems": MAX_DEVICES_LISTED, "items": ref("Device")},
            }
        ),
        "DeviceRevoked": all_required(
            {
                "device": ref("Device"),
                "revoked": {"type": "boolean", "description": "false: it was revoked already"},
            }
        ),
        "DevicesRevoked": all_required({"user_id": {"type": "string"}, "revoked": count}),
        "Health": all_required({"status": {"const": "ok"}}),
        "Ready": all_required(
            {
                "status": {"const": "ready"},
                # How the broker to the other processes is (docs/scaling.md); never where it is.
                "broker": {"type": "string", "enum": ["in-process", "up", "down"]},
            }
        ),
        "Stats": all_required(
            {
                "status": {"type": "string"},
                "connections": count,
                "users_online": count,
                "this_process": all_required({"connections": count, "users_online": count}),
                "notifications": all_required({"stored": count, "delivered": count, "published": count}),
                "send_queue_depth": count,
                "rss_kib": {"type": ["integer", "null"], "minimum": 0},
                "max_rss_kib": count,
                "uptime_seconds": {"type": "number"},
            }
        ),
    }
