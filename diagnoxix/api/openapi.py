"""The OpenAPI 3.1 description of the HTTP API, served at `/v1/openapi.json`.

A test checks that every route the app serves is described here and nothing else is.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ERROR for status in statuses}


def openapi_document() -> dict[str, Any]:
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    # A service's API key for any user, or the user's own connection token for themselves.
    user_auth: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    user_param = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Diagnoxix Notify",
            "version": "1",
            "description": "Real-time notifications for the Diagnoxix clinic platform.",
        },
        "paths": {
            "/v1/ws/notifications": {
                "get": {
                    "summary": "Open a notification WebSocket",
                    "description": (
                        "Upgrade to a WebSocket. Credentials: subprotocol `bearer.<token>` beside"
                        " `diagnoxix.v1`, or `?token=`; `?user_id=` only in --dev mode."
                        " `since=<seq>` resumes after that seq. See docs/protocol.md."
                    ),
                    "parameters": [
                        {"name": "token", "in": "query", "schema": {"type": "string"}},
                        {"name": "user_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": {"101": {"description": "Switching protocols"}, **_errors(400, 401, 403)},
                }
            },
            "/v1/ws/stats": {
                "get": {
                    "summary": "Aggregate connection and delivery counts",
                    "responses": {"200": {"description": "Counts", **_json(_ref("Stats"))}},
                }
            },
            "/v1/ws/test-notification": {
                "post": {
                    "summary": "Send a test notification (open in --dev mode)",
                    "security": [{}, *api_key],
                    "requestBody": _json(_ref("NotificationInput")),
                    "responses": {
                        "201": {"description": "Stored", **_json(_ref("SingleResult"))},
                        **_errors(400, 401, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/notifications": {
                "post": {
                    "summary": "Send one notification, or a batch of up to 1,000",
                    "security": api_key,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": _json({"oneOf": [_ref("NotificationInput"), _ref("BatchInput")]}),
                    "responses": {
                        "201": {
                            "description": "Stored (and sent to every open connection of the user)",
                            **_json({"oneOf": [_ref("SingleResult"), _ref("BatchResult")]}),
                        },
                        **_errors(400, 401, 409, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/broadcasts": {
                "post": {
                    "summary": "Send a system notification to everyone connected",
                    "security": api_key,
                    "requestBody": _json(_ref("BroadcastInput")),
                    "responses": {
                        "201": {"description": "Stored and sent", **_json(_ref("BroadcastResult"))},
                        **_errors(400, 401, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/users/{user_id}/notifications": {
                "get": {
                    "summary": "A user's notifications, newest first",
                    "security": user_auth,
                    "parameters": [
                        user_param,
                        {"name": "type", "in": "query", "schema": {"type": "string"}},
                        {"name": "unread", "in": "query", "schema": {"type": "boolean"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        {
                            "name": "before",
                            "in": "query",
                            "description": "next_cursor of the previous page",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                    "responses": {
                        "200": {"description": "A page", **_json(_ref("HistoryPage"))},
                        **_errors(400, 401),
                    },
                }
            },
            "/v1/users/{user_id}/notifications/read": {
                "post": {
                    "summary": "Mark notifications read; every connection of the user gets the unread count",
                    "security": user_auth,
                    "parameters": [user_param],
                    "requestBody": _json(
                        {
                            "type": "object",
                            "required": ["ids"],
                            "properties": {
                                "ids": {"type": "array", "items": {"type": "string"}, "maxItems": 1000}
                            },
                        }
                    ),
                    "responses": {
                        "200": {"description": "Marked", **_json(_ref("ReadResult"))},
                        **_errors(400, 401, 403, 415, 422),
                    },
                }
            },
            "/v1/users/{user_id}/notifications/read-all": {
                "post": {
                    "summary": "Mark all of a user's notifications read",
                    "security": user_auth,
                    "parameters": [user_param],
                    "responses": {
                        "200": {"description": "Marked", **_json(_ref("ReadAllResult"))},
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/users/{user_id}/unread-count": {
                "get": {
                    "summary": "How many of a user's notifications are unread",
                    "security": user_auth,
                    "parameters": [user_param],
                    "responses": {
                        "200": {"description": "Count", **_json(_ref("UnreadCount"))},
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/users/{user_id}/presence": {
                "get": {
                    "summary": "Whether a user is online, with how many connections, since when",
                    "security": api_key,
                    "parameters": [user_param],
                    "responses": {
                        "200": {"description": "Presence", **_json(_ref("Presence"))},
                        **_errors(400, 401),
                    },
                }
            },
            "/v1/presence": {
                "get": {
                    "summary": "Everyone online now, longest online first",
                    "security": api_key,
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        }
                    ],
                    "responses": {
                        "200": {"description": "Online users", **_json(_ref("PresenceList"))},
                        **_errors(400, 401),
                    },
                }
            },
            "/v1/tokens": {
                "post": {
                    "summary": "Mint a connection token for a user",
                    "security": api_key,
                    "requestBody": _json(_ref("TokenInput")),
                    "responses": {
                        "201": {"description": "Token", **_json(_ref("Token"))},
                        **_errors(400, 401, 415, 422),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and database check",
                    "responses": {"200": {"description": "Healthy"}, **_errors(503)},
                }
            },
            "/v1/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
            },
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "dxn_… API key"},
                "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "responses": {
                "Error": {"description": "An error", **_json(_ref("Error"))},
            },
            "schemas": _schemas(),
        },
    }


def _schemas() -> dict[str, Any]:
    priority = {"type": "string", "enum": ["low", "normal", "high", "critical"]}
    notification_input = {
        "type": "object",
        "required": ["user_id", "title"],
        "additionalProperties": False,
        "properties": {
            "user_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"},
            "type": {"type": "string", "maxLength": 64},
            "title": {"type": "string", "maxLength": 200},
            "message": {"type": "string", "maxLength": 4000},
            "data": {"type": "object", "description": "at most 16 KiB of JSON"},
            "priority": priority,
        },
    }
    notification = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "user_id": {"type": "string", "description": '"*" for a broadcast'},
            "title": {"type": "string"},
            "message": {"type": "string"},
            "data": {"type": "object"},
            "timestamp": {"type": "string", "format": "date-time"},
            "id": {"type": "string"},
            "seq": {"type": "integer"},
            "priority": priority,
            "read": {"type": "boolean"},
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "read_at": {"type": ["string", "null"], "format": "date-time"},
            "delivery": {"type": "string", "enum": ["delivered", "sending", "queued", "broadcast"]},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
        "NotificationInput": notification_input,
        "BatchInput": {
            "type": "object",
            "required": ["notifications"],
            "properties": {
                "notifications": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": _ref("NotificationInput"),
                }
            },
        },
        "BroadcastInput": {
            "type": "object",
            "required": ["title"],
            "properties": {
                "title": {"type": "string", "maxLength": 200},
                "message": {"type": "string", "maxLength": 4000},
                "data": {"type": "object"},
                "type": {"type": "string", "maxLength": 64},
                "priority": priority,
                "ttl": {"type": "integer", "minimum": 60, "description": "seconds until it expires"},
            },
        },
        "Notification": notification,
        "ReadResult": {
            "type": "object",
            "properties": {
                "ids": {"type": "array", "items": {"type": "string"}},
                "unread": {"type": "integer"},
            },
        },
        "ReadAllResult": {
            "type": "object",
            "properties": {"count": {"type": "integer"}, "unread": {"type": "integer"}},
        },
        "UnreadCount": {
            "type": "object",
            "properties": {"user_id": {"type": "string"}, "unread": {"type": "integer"}},
        },
        "Presence": {
            "type": "object",
            "properties": {
                "user_id": {"type": "string"},
                "online": {"type": "boolean"},
                "connections": {"type": "integer"},
                "since": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "PresenceList": {
            "type": "object",
            "properties": {
                "online": {"type": "integer"},
                "users": {"type": "array", "items": _ref("Presence")},
            },
        },
        "SingleResult": {"type": "object", "properties": {"notification": _ref("Notification")}},
        "BatchResult": {
            "type": "object",
            "properties": {
                "count": {"type": "integer"},
                "notifications": {"type": "array", "items": _ref("Notification")},
            },
        },
        "BroadcastResult": {
            "type": "object",
            "properties": {"notification": _ref("Notification"), "connections": {"type": "integer"}},
        },
        "HistoryPage": {
            "type": "object",
            "properties": {
                "notifications": {"type": "array", "items": _ref("Notification")},
                "next_cursor": {"type": ["integer", "null"]},
            },
        },
        "TokenInput": {
            "type": "object",
            "required": ["user_id"],
            "properties": {"user_id": {"type": "string"}, "ttl": {"type": "integer", "minimum": 10}},
        },
        "Token": {
            "type": "object",
            "properties": {
                "token": {"type": "string"},
                "user_id": {"type": "string"},
                "expires_at": {"type": "string", "format": "date-time"},
            },
        },
        "Stats": {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "connections": {"type": "integer"},
                "users_online": {"type": "integer"},
                "notifications": {"type": "object"},
                "send_queue_depth": {"type": "integer"},
                "max_rss_kib": {"type": "integer"},
                "uptime_seconds": {"type": "number"},
            },
        },
    }
