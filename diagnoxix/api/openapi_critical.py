"""The OpenAPI paths and schemas of critical results (`api.groups`, `api.critical`): groups and
members, group sends, acknowledgements and their status, escalation policies."""

from __future__ import annotations

from typing import Any

from diagnoxix.api.openapi_corrections import correction_schemas
from diagnoxix.api.openapi_parts import (
    API_KEY_ERRORS,
    BODY_ERRORS,
    Schema,
    body,
    ref,
    responses,
    user_id_schema,
)
from diagnoxix.rules import (
    IDEMPOTENCY_KEY_REGEX,
    MAX_DATA_BYTES,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_TITLE_CHARS,
    MAX_TYPE_CHARS,
    MESSAGE_REGEX,
    PRIORITIES,
    SENDABLE_TYPE_REGEX,
    TITLE_REGEX,
)
from diagnoxix.rules.corrections import PATH_ID_REGEX
from diagnoxix.rules.critical import GROUP_NAME_REGEX
from diagnoxix.rules.escalation import CHANNELS

_STAMP: Schema = {"type": ["string", "null"], "format": "date-time"}


def critical_paths() -> dict[str, Any]:
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    recipient: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    group = {
        "name": "group",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": GROUP_NAME_REGEX},
    }
    member = {"name": "user_id", "in": "path", "required": True, "schema": user_id_schema()}
    notification = {
        "name": "notification_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": PATH_ID_REGEX},
    }
    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "A retry with the same key and body opens nothing twice",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
            "pattern": IDEMPOTENCY_KEY_REGEX,
        },
    }
    return {
        "/v1/groups": {
            "get": {
                "summary": "Every group, with how many members and how many on duty",
                "security": api_key,
                "responses": responses(200, "Groups", ref("GroupList"), *API_KEY_ERRORS),
            }
        },
        "/v1/groups/{group}": {
            "get": {
                "summary": "A group's members and their on-duty switch",
                "security": api_key,
                "parameters": [group],
                "responses": responses(200, "Members", ref("Group"), 400, 404, *API_KEY_ERRORS),
            },
            "put": {
                "summary": "Create a group (`role:on-call-lab`, `ward:b-nurses`); 200 when it exists",
                "security": api_key,
                "parameters": [group],
                "responses": responses(201, "Created", ref("GroupCreated"), 400, *API_KEY_ERRORS)
                | {
                    "200": {
                        "description": "It existed",
                        "content": {"application/json": {"schema": ref("GroupCreated")}},
                    }
                },
            },
            "delete": {
                "summary": "Delete a group and its memberships",
                "security": api_key,
                "parameters": [group],
                "responses": responses(200, "Deleted", ref("GroupDeleted"), 400, 404, *API_KEY_ERRORS),
            },
        },
        "/v1/groups/{group}/members/{user_id}": {
            "put": {
                "summary": "Add a member, or switch them on or off duty",
                "security": api_key,
                "parameters": [group, member],
                "requestBody": body(ref("MemberInput")),
                "responses": responses(200, "Member", ref("Member"), *BODY_ERRORS, 404, *API_KEY_ERRORS),
            },
            "delete": {
                "summary": "Remove a member from a group",
                "security": api_key,
                "parameters": [group, member],
                "responses": responses(200, "Removed", ref("MemberRemoved"), 400, 404, *API_KEY_ERRORS),
            },
        },
        "/v1/groups/{group}/notifications": {
            "post": {
                "summary": "Send to a group: each member on duty gets their own copy, tied by one id",
                "description": (
                    "A critical one (or with `requires_ack: true`) stays open until a person"
                    " acknowledges it, and escalates by its policy meanwhile (docs/critical.md)."
                ),
                "security": api_key,
                "parameters": [group, key],
                "requestBody": body(ref("GroupNotificationInput")),
                "responses": responses(
                    201, "Sent", ref("GroupSendResult"), *BODY_ERRORS, 404, 409, *API_KEY_ERRORS
                ),
            }
        },
        "/v1/notifications/{notification_id}/acknowledgement": {
            "get": {
                "summary": "The acknowledgement status of the critical item a notification is a copy of",
                "security": recipient,
                "parameters": [notification],
                "responses": responses(200, "Status", ref("CriticalStatus"), 400, 404, 403, *API_KEY_ERRORS),
            },
            "post": {
                "summary": "Acknowledge: the recipient (their token), or on behalf with a reason (API key)",
                "description": (
                    "Closes the item for every recipient (each gets an `acknowledged` frame) and cancels"
                    " the rest of its escalation. An API key must give `reason` (on behalf); with a"
                    " recipient's own token the body is not read. Acknowledging again answers"
                    " `changed: false`."
                ),
                "security": recipient,
                "parameters": [notification],
                "requestBody": body(ref("OnBehalfInput")),
                "responses": responses(
                    200, "Acknowledged", ref("Acknowledged"), *BODY_ERRORS, 403, 404, 409, *API_KEY_ERRORS
                ),
            },
        },
        "/v1/critical/{critical_id}": {
            "get": {
                "summary": "A critical item (or group send): status, recipients, and its whole timeline",
                "security": api_key,
                "parameters": [
                    {
                        "name": "critical_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": PATH_ID_REGEX},
                    }
                ],
                "responses": responses(200, "Item", ref("CriticalTimeline"), 404, *API_KEY_ERRORS),
            }
        },
        "/v1/escalation-policies": {
            "get": {
                "summary": "The escalation policies the server read at start",
                "security": api_key,
                "responses": responses(200, "Policies", ref("PolicyList"), *API_KEY_ERRORS),
            }
        },
    }


def _status() -> Schema:
    return {
        "type": "object",
        "required": ["critical_id", "state", "requires_ack", "target", "recipients", "created_at"],
        "properties": {
            "critical_id": {"type": "string", "description": "the item's id (a group send's id)"},
            "state": {"enum": ["open", "acknowledged", "sent"]},
            "requires_ack": {"type": "boolean"},
            "target": {"type": "string", "description": "user:<id> or group:<name>"},
            "type": {"type": "string"},
            "priority": {"enum": list(PRIORITIES)},
            "policy": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "next_step_at": _STAMP,
            "acknowledged_at": _STAMP,
            "acknowledged_by": {"type": ["string", "null"]},
            "acknowledged_via": {"enum": ["socket", "http", "dashboard", None]},
            "device": {"type": ["string", "null"], "description": "the token id that acknowledged"},
            "on_behalf": {"type": "boolean"},
            "recipients": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id", "notification_id", "step"],
                    "properties": {
                        "user_id": {"type": "string"},
                        "notification_id": {"type": "string"},
                        "step": {"type": "integer"},
                        "delivered_at": _STAMP,
                        "read_at": _STAMP,
                    },
                },
            },
        },
    }


def critical_schemas() -> dict[str, Schema]:
    member = {
        "type": "object",
        "required": ["user_id", "on_duty"],
        "properties": {"user_id": {"type": "string"}, "on_duty": {"type": "boolean"}},
    }
    notifications = {"type": "array", "items": {"type": "object"}}
    return {
        "GroupList": {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["group", "members", "on_duty"],
                        "properties": {
                            "group": {"type": "string"},
                            "created_at": {"type": "string", "format": "date-time"},
                            "members": {"type": "integer"},
                            "on_duty": {"type": "integer"},
                        },
                    },
                }
            },
        },
        "Group": {
            "type": "object",
            "required": ["group", "members"],
            "properties": {"group": {"type": "string"}, "members": {"type": "array", "items": member}},
        },
        "GroupCreated": {
            "type": "object",
            "required": ["group", "created"],
            "properties": {"group": {"type": "string"}, "created": {"type": "boolean"}},
        },
        "GroupDeleted": {
            "type": "object",
            "required": ["group", "deleted"],
            "properties": {"group": {"type": "string"}, "deleted": {"const": True}},
        },
        "MemberInput": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"on_duty": {"type": "boolean", "default": True}},
        },
        "Member": {
            "type": "object",
            "required": ["group", "user_id", "on_duty"],
            "properties": {
                "group": {"type": "string"},
                "user_id": {"type": "string"},
                "on_duty": {"type": "boolean"},
            },
        },
        "MemberRemoved": {
            "type": "object",
            "required": ["group", "user_id", "removed"],
            "properties": {
                "group": {"type": "string"},
                "user_id": {"type": "string"},
                "removed": {"const": True},
            },
        },
        "GroupNotificationInput": {
            "type": "object",
            "required": ["title"],
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "maxLength": MAX_TYPE_CHARS, "pattern": SENDABLE_TYPE_REGEX},
                "title": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_TITLE_CHARS,
                    "pattern": TITLE_REGEX,
                },
                "message": {
                    "type": ["string", "null"],
                    "maxLength": MAX_MESSAGE_CHARS,
                    "pattern": MESSAGE_REGEX,
                },
                "data": {
                    "type": ["object", "null"],
                    "description": f"at most {MAX_DATA_BYTES} bytes as JSON",
                },
                "priority": {"enum": [*PRIORITIES, None]},
                "requires_ack": {
                    "type": "boolean",
                    "description": "kept open until acknowledged (critical: always)",
                },
            },
        },
        "GroupSendResult": {
            "type": "object",
            "required": ["critical", "notifications"],
            "properties": {"critical": ref("CriticalStatus"), "notifications": notifications},
        },
        "CriticalStatus": _status(),
        "Acknowledged": {
            "allOf": [ref("CriticalStatus")],
            "required": ["changed"],
            "properties": {"changed": {"type": "boolean", "description": "false: acknowledged before"}},
        },
        "CriticalTimeline": {
            "allOf": [ref("CriticalStatus")],
            "required": ["timeline"],
            "properties": {
                "timeline": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["at", "event"],
                        "properties": {
                            "at": _STAMP,
                            "event": {"type": "string"},
                            "step": {"type": ["integer", "null"]},
                            "channel": {"type": ["string", "null"]},
                            "user_id": {"type": ["string", "null"]},
                            "actor": {"type": ["string", "null"]},
                            "details": {"type": "object"},
                        },
                    },
                }
            },
        },
        "OnBehalfInput": {
            "type": "object",
            "required": ["reason"],
            "additionalProperties": False,
            "properties": {"reason": correction_schemas()["RetractInput"]["properties"]["reason"]},
        },
        "PolicyList": {
            "type": "object",
            "required": ["policies"],
            "properties": {
                "policies": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "steps"],
                        "properties": {
                            "name": {"type": "string"},
                            "types": {"type": "array", "items": {"type": "string"}},
                            "priorities": {"type": "array", "items": {"type": "string"}},
                            "steps": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["after_seconds", "to", "channels"],
                                    "properties": {
                                        "after_seconds": {"type": "integer"},
                                        "to": {"type": "string"},
                                        "channels": {"type": "array", "items": {"enum": list(CHANNELS)}},
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    }
