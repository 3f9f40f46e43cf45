"""The OpenAPI paths and schemas of corrections (`api.corrections`), built from
`diagnoxix.rules.corrections`: retract a notification, update its words."""

from __future__ import annotations

from typing import Any

from diagnoxix.api.openapi_parts import (
    API_KEY_ERRORS,
    BODY_ERRORS,
    Schema,
    body,
    ref,
    responses,
    user_id_schema,
)
from diagnoxix.rules import MAX_MESSAGE_CHARS, MAX_TITLE_CHARS, MESSAGE_REGEX, TITLE_REGEX
from diagnoxix.rules.corrections import MAX_REASON_CHARS, PATH_ID_REGEX


def _reason() -> Schema:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_REASON_CHARS,
        "pattern": TITLE_REGEX,
        "description": "why (audited, never sent to a client): not blank; no NUL",
    }


def _title() -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS, "pattern": TITLE_REGEX}


def _message() -> Schema:
    return {"type": "string", "maxLength": MAX_MESSAGE_CHARS, "pattern": MESSAGE_REGEX}


def correction_paths() -> dict[str, Any]:
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    notification = {
        "name": "notification_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": PATH_ID_REGEX},
    }
    errors = (*BODY_ERRORS, 404, *API_KEY_ERRORS)
    return {
        "/v1/notifications/{notification_id}/retract": {
            "post": {
                "summary": "Retract a notification sent in error: gone from history, counts, devices",
                "description": "Idempotent: retracting again answers with `changed: false`.",
                "security": api_key,
                "parameters": [notification],
                "requestBody": body(ref("RetractInput")),
                "responses": responses(200, "Retracted", ref("Correction"), *errors),
            }
        },
        "/v1/notifications/{notification_id}": {
            "patch": {
                "summary": "Give a notification new words (title and/or message) on every device",
                "description": "A retracted notification cannot be updated (409).",
                "security": api_key,
                "parameters": [notification],
                "requestBody": body(ref("UpdateInput")),
                "responses": responses(200, "Updated", ref("Correction"), *errors, 409),
            }
        },
    }


def correction_schemas() -> dict[str, Schema]:
    return {
        "RetractInput": {
            "type": "object",
            "required": ["reason"],
            "additionalProperties": False,
            "properties": {"reason": _reason()},
        },
        "UpdateInput": {
            "type": "object",
            "required": ["reason"],
            "additionalProperties": False,
            "anyOf": [{"required": ["title"]}, {"required": ["message"]}],
            "properties": {"title": _title(), "message": _message(), "reason": _reason()},
        },
        "Correction": {
            "type": "object",
            "required": ["id", "user_id", "correction", "seq", "corrected_at", "changed"],
            "properties": {
                "id": {"type": "string"},
                "user_id": {"anyOf": [user_id_schema(), {"const": "*"}]},
                "correction": {"enum": ["retracted", "updated"]},
                "seq": {"type": "integer", "description": "the correction's own seq in the user's stream"},
                "corrected_at": {"type": "string", "format": "date-time"},
                "changed": {"type": "boolean", "description": "false: it was retracted before"},
                "title": {"type": "string", "description": "updated: the words now"},
                "message": {"type": "string"},
            },
        },
    }
