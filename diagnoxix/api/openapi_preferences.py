"""The OpenAPI paths and schemas of users' channel preferences (`api.preferences`), built from
`diagnoxix.rules.preferences`."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from diagnoxix.api.openapi_parts import BODY_ERRORS, USER_ERRORS, Schema, body, ref, responses, user_id_schema
from diagnoxix.rules import TYPE_REGEX
from diagnoxix.rules.preferences import CHANNELS, CLOCK_TIME_REGEX, EVERY_CATEGORY, MAX_CATEGORIES


def preference_paths() -> dict[str, Any]:
    user_auth: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    user = {"name": "user_id", "in": "path", "required": True, "schema": user_id_schema()}
    answer = ref("Preferences")
    return {
        "/v1/users/{user_id}/preferences": {
            "get": {
                "summary": "A user's channel preferences and quiet hours (the defaults if none chosen)",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "Preferences", answer, 400, *USER_ERRORS),
            },
            "put": {
                "summary": "Replace a user's channel preferences and quiet hours",
                "description": (
                    "Which channels beyond the socket (push, webhook) the user wants per category (a"
                    " notification type, or `*` for the rest), and quiet hours in their time zone when"
                    " only critical notifications go beyond the socket. Critical categories cannot be"
                    " switched off. What the body leaves out is the default: every channel, no quiet hours."
                ),
                "security": user_auth,
                "parameters": [user],
                "requestBody": body(ref("PreferencesInput")),
                "responses": responses(200, "Stored", answer, *BODY_ERRORS, *USER_ERRORS),
            },
            "delete": {
                "summary": "Back to the defaults: every channel, no quiet hours",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "The defaults", answer, 400, *USER_ERRORS),
            },
        }
    }


def preference_schemas(
    time_zones: Collection[str], critical_categories: Collection[str]
) -> dict[str, Schema]:
    clock = {"type": "string", "pattern": CLOCK_TIME_REGEX, "description": "HH:MM, 00:00 to 23:59"}
    quiet = {
        "type": ["object", "null"],
        "description": "From `start` until `end` on the user's clock (over midnight if end < start)",
        "properties": {"start": clock, "end": clock},
        "required": ["start", "end"],
        "additionalProperties": False,
    }
    category_names = {"anyOf": [{"const": EVERY_CATEGORY}, {"type": "string", "pattern": TYPE_REGEX}]}

    def choice(on: Schema) -> Schema:
        return {
            "type": "object",
            "properties": {name: on for name in CHANNELS},
            "minProperties": 1,
            "additionalProperties": False,
        }

    channels = {
        "type": "object",
        "maxProperties": MAX_CATEGORIES,
        "propertyNames": category_names,
        "properties": {name: choice({"const": True}) for name in sorted(critical_categories)},
        "additionalProperties": choice({"type": "boolean"}),
    }
    zone = {"type": "string", "enum": sorted(time_zones), "description": "an IANA name, e.g. Europe/Berlin"}
    return {
        "PreferencesInput": {
            "type": "object",
            "properties": {"time_zone": zone, "quiet_hours": quiet, "channels": channels},
            "additionalProperties": False,
        },
        "Preferences": {
            "type": "object",
            "properties": {
                "time_zone": {"type": "string"},
                "quiet_hours": quiet,
                "channels": channels,
                "critical_categories": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "types that go on every channel at any hour, whatever is chosen",
                },
            },
            "required": ["time_zone", "quiet_hours", "channels", "critical_categories"],
            "additionalProperties": False,
        },
    }
