"""The OpenAPI 3.1 description of the HTTP API, served at `/v1/openapi.json`.

Built from the input rules: every pattern, length, item count, enum, ttl range and page limit is
the constant in `diagnoxix.rules` the server checks with, so the two cannot drift apart. Each route
lists every status it can answer with. Tests check that the document describes exactly the served
routes, and a contract test sends it generated requests, valid and not, against a live server.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from diagnoxix.api.openapi_corrections import correction_paths, correction_schemas
from diagnoxix.api.openapi_critical import critical_paths, critical_schemas
from diagnoxix.api.openapi_kinds import TYPED, kind_schemas
from diagnoxix.api.openapi_messaging import add_links, messaging_paths, messaging_schemas
from diagnoxix.api.openapi_parts import (
    API_KEY_ERRORS,
    BODY_ERRORS,
    ERROR_NAMES,
    USER_ERRORS,
    body,
    error_reasons,
    input_schemas,
    integer,
    json_content,
    output_schemas,
    query,
    ref,
    replayed,
    responses,
    user_id_schema,
)
from diagnoxix.api.openapi_preferences import preference_paths, preference_schemas
from diagnoxix.api.openapi_push import push_paths, push_schemas
from diagnoxix.api.openapi_scheduled import SCHEDULING, scheduled_202, scheduled_paths, scheduled_schemas
from diagnoxix.api.openapi_sse import sse_paths, sse_schemas
from diagnoxix.config import Settings
from diagnoxix.rules import (
    BATCH_ITEMS,
    CURSOR_SEQ,
    DEFAULT_HISTORY_PAGE,
    DEFAULT_PRESENCE_PAGE,
    EPOCH_REGEX,
    HISTORY_PAGE,
    IDEMPOTENCY_KEY_REGEX,
    MAX_IDEMPOTENCY_KEY_CHARS,
    PRESENCE_PAGE,
    SINCE_SEQ,
    TOKEN_ID_REGEX,
    TYPE_REGEX,
)
from diagnoxix.rules.kinds import KIND_NAMES
from diagnoxix.rules.preferences import TimeZones


def openapi_document(settings: Settings, time_zones: Collection[str] | None = None) -> dict[str, Any]:
    """The document for a server with these settings (the token ttl ceiling and the body size
    limit are settings) and the time zone names it knows (read here if not given)."""
    zones = TimeZones().names if time_zones is None else time_zones
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
        "paths": _paths()
        | correction_paths()
        | preference_paths()
        | critical_paths()
        | sse_paths()
        | messaging_paths()
        | push_paths(),
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A service's dxn_… API key"},
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "DIAGNOXIX_METRICS_TOKEN, for scrapers outside DIAGNOXIX_METRICS_ALLOW",
                },
                "userToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A user's connection token (POST /v1/tokens), for their own data",
                },
            },
            "responses": {
                ERROR_NAMES[status]: {"description": reason, **json_content(ref("Error"))}
                for status, reason in error_reasons(settings).items()
            },
            "schemas": add_links(
                input_schemas(settings)
                | kind_schemas()
                | output_schemas()
                | scheduled_schemas()
                | correction_schemas()
                | preference_schemas(zones, settings.critical_categories)
                | critical_schemas()
                | sse_schemas()
                | messaging_schemas()
                | push_schemas(settings),
                settings,
            ),
        },
    }


def _paths() -> dict[str, Any]:
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    # A service's API key for any user, or the user's own connection token for themselves.
    user_auth: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    user = {"name": "user_id", "in": "path", "required": True, "schema": user_id_schema()}
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
                    query("token", {"type": "string"}, "a connection token"),
                    query("user_id", user_id_schema(), "--dev mode only: connect as this user"),
                    query("since", integer(SINCE_SEQ), "the last seq processed (0: from the start)"),
                    query("epoch", {"type": "string", "pattern": EPOCH_REGEX}, "the epoch of that seq"),
                ],
                "responses": responses(101, "Switching protocols", None, 400, 401, 403, 429),
            }
        },
        "/v1/ws/stats": {
            "get": {
                "summary": "Aggregate connection and delivery counts",
                "responses": responses(200, "Counts", ref("Stats")),
            }
        },
        "/v1/ws/test-notification": {
            "post": {
                "summary": "Send a test notification (open in --dev mode, an API key otherwise)",
                "security": [{}, *api_key],
                "requestBody": body(ref("TestNotificationInput")),
                "responses": responses(201, "Stored", ref("TestResult"), *BODY_ERRORS, *API_KEY_ERRORS),
            }
        },
        "/v1/notifications": {
            "post": {
                "summary": f"Send one notification, or a batch of up to {BATCH_ITEMS.maximum:,}",
                "description": (
                    "Each item is a notification in your own words (`title`, `message`, ...), or typed:"
                    f" `kind` ({', '.join(KIND_NAMES)}) and its facts, which the server words as the"
                    " Python service's typed senders do and gives its priority. A lab result never"
                    " carries values. A critical item (or one with `requires_ack: true`) stays open until"
                    " a person acknowledges it (`/v1/notifications/{notification_id}/acknowledgement`)"
                    " and escalates by its policy meanwhile (docs/critical.md)." + SCHEDULING
                ),
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
                "requestBody": body({"oneOf": [ref("NotificationInput"), ref(TYPED), ref("BatchInput")]}),
                "responses": replayed(
                    responses(
                        201,
                        "Stored (and sent to every open connection of the user)",
                        {"oneOf": [ref("SingleResult"), ref("BatchResult")]},
                        *BODY_ERRORS,
                        *API_KEY_ERRORS,
                        409,
                        410,
                    )
                )
                | {"202": scheduled_202()},
            }
        },
        **scheduled_paths(),
        "/v1/broadcasts": {
            "post": {
                "summary": "Send a system notification to everyone connected, and to later arrivals",
                "security": api_key,
                "requestBody": body(ref("BroadcastInput")),
                "responses": responses(
                    201, "Stored and sent", ref("BroadcastResult"), *BODY_ERRORS, *API_KEY_ERRORS
                ),
            }
        },
        "/v1/users/{user_id}/notifications": {
            "get": {
                "summary": "A user's notifications, newest first",
                "security": user_auth,
                "parameters": [
                    user,
                    query("type", {"type": "string", "pattern": TYPE_REGEX}, "only this type"),
                    query("unread", {"type": "boolean"}, "only unread ones"),
                    query("limit", integer(HISTORY_PAGE, default=DEFAULT_HISTORY_PAGE), "page size"),
                    query("before", integer(CURSOR_SEQ), "the previous page's next_cursor"),
                ],
                "responses": responses(200, "A page", ref("HistoryPage"), 400, *USER_ERRORS),
            }
        },
        "/v1/users/{user_id}/notifications/read": {
            "post": {
                "summary": "Mark notifications read; every connection of the user gets the unread count",
                "security": user_auth,
                "parameters": [user],
                "requestBody": body(ref("ReadInput")),
                "responses": responses(200, "Marked", ref("ReadResult"), *BODY_ERRORS, *USER_ERRORS),
            }
        },
        "/v1/users/{user_id}/notifications/read-all": {
            "post": {
                "summary": "Mark all of a user's notifications read",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "Marked", ref("ReadAllResult"), 400, *USER_ERRORS),
            }
        },
        "/v1/users/{user_id}/unread-count": {
            "get": {
                "summary": "How many of a user's notifications are unread",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "Count", ref("UnreadCount"), 400, *USER_ERRORS),
            }
        },
        "/v1/users/{user_id}/devices": {
            "get": {
                "summary": "A user's devices (one per live connection token), newest first",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "Devices", ref("DeviceList"), 400, *USER_ERRORS),
            },
            "delete": {
                "summary": "Revoke every device of a user: tokens refused, sockets closed (4003)",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "Revoked", ref("DevicesRevoked"), 400, *USER_ERRORS),
            },
        },
        "/v1/users/{user_id}/devices/{token_id}": {
            "delete": {
                "summary": "Revoke one device: its token is refused, its sockets close (4003)",
                "security": user_auth,
                "parameters": [
                    user,
                    {
                        "name": "token_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": TOKEN_ID_REGEX},
                    },
                ],
                "responses": responses(200, "Revoked", ref("DeviceRevoked"), 400, 404, *USER_ERRORS),
            }
        },
        "/v1/users/{user_id}/presence": {
            "get": {
                "summary": "Whether a user is online, with how many connections, since when",
                "security": api_key,
                "parameters": [user],
                "responses": responses(200, "Presence", ref("Presence"), 400, *API_KEY_ERRORS),
            }
        },
        "/v1/presence": {
            "get": {
                "summary": "Everyone online now, longest online first",
                "security": api_key,
                "parameters": [
                    query("limit", integer(PRESENCE_PAGE, default=DEFAULT_PRESENCE_PAGE), "users listed")
                ],
                "responses": responses(200, "Online users", ref("PresenceList"), 400, *API_KEY_ERRORS),
            }
        },
        "/v1/tokens": {
            "post": {
                "summary": "Mint a connection token for a user",
                "security": api_key,
                "requestBody": body(ref("TokenInput")),
                "responses": responses(201, "Token", ref("Token"), *BODY_ERRORS, *API_KEY_ERRORS),
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and database check",
                "responses": responses(200, "Healthy", ref("Health"), 503),
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the store takes a write now, and the server is not shutting down",
                "responses": responses(200, "Ready", ref("Ready"), 503),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (DIAGNOXIX_METRICS_ALLOW addresses, or the metrics token)",
                "security": [{}, {"metricsToken": []}],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **{k: v for k, v in responses(200, "", None, 401, 403).items() if k != "200"},
                },
            }
        },
        "/v1/openapi.json": {
            "get": {"summary": "This document", "responses": responses(200, "OpenAPI", {"type": "object"})}
        },
    }
