"""The OpenAPI parts of messaging (`api.messaging`, `rules.links`, `rules.locales`): a send's `url`
and `actions` (the link rule as a pattern built from the server's configured hosts), a stored
notification's, a user's locale, and a user's answer to an action."""

from __future__ import annotations

from typing import Any

from diagnoxix.api.openapi_parts import (
    BODY_ERRORS,
    USER_ERRORS,
    Schema,
    all_required,
    body,
    ref,
    responses,
    user_id_schema,
)
from diagnoxix.config import Settings
from diagnoxix.rules.corrections import PATH_ID_REGEX
from diagnoxix.rules.links import (
    ACTION_NAME_REGEX,
    LABEL_REGEX,
    MAX_ACTION_NAME_CHARS,
    MAX_ACTIONS,
    MAX_LABEL_CHARS,
    MAX_URL_CHARS,
    LinkPolicy,
)
from diagnoxix.rules.locales import BUILT_IN_LOCALES, LOCALE_REGEX, MAX_LOCALE_CHARS

# Schemas that take `url` and `actions`: a notification in its own words, and each typed kind.
_LINKED = (
    "NotificationInput",
    "AppointmentNotificationInput",
    "LabResultNotificationInput",
    "AiAnalysisNotificationInput",
)


def _url(policy: LinkPolicy) -> Schema:
    if not policy.allows_links:
        return {"type": "null", "description": "links are off: the server has no DIAGNOXIX_LINK_HOSTS"}
    return {
        "type": "string",
        "maxLength": MAX_URL_CHARS,
        "pattern": policy.url_regex,
        "description": "https to one of the server's configured hosts (DIAGNOXIX_LINK_HOSTS), no user part",
    }


def _action_schemas(policy: LinkPolicy) -> list[Schema]:
    label = {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS, "pattern": LABEL_REGEX}
    answer = {
        "type": "object",
        "required": ["label", "action"],
        "additionalProperties": False,
        "properties": {
            "label": label,
            "action": {"type": "string", "maxLength": MAX_ACTION_NAME_CHARS, "pattern": ACTION_NAME_REGEX},
        },
        "description": "an answer (confirm, decline...) the user gives, sent back to you by webhook",
    }
    if not policy.allows_links:
        return [answer]
    link = {
        "type": "object",
        "required": ["label", "url"],
        "additionalProperties": False,
        "properties": {"label": label, "url": _url(policy)},
        "description": "a link the button opens",
    }
    return [link, answer]


def link_properties(settings: Settings) -> dict[str, Schema]:
    policy = LinkPolicy(settings.link_hosts, settings.dev)
    url = _url(policy)
    return {
        "url": {
            **url,
            "type": [url["type"], "null"] if url["type"] != "null" else "null",
            "description": f"opened when the user clicks the notification: {url['description']}",
        },
        "actions": {
            "type": ["array", "null"],
            "maxItems": MAX_ACTIONS,
            "items": {"oneOf": _action_schemas(policy)},
            "description": f"up to {MAX_ACTIONS} buttons",
        },
    }


def add_links(schemas: dict[str, Schema], settings: Settings) -> dict[str, Schema]:
    """The component schemas with `url` and `actions` on every input that takes them, and on a
    stored notification (present only when it has them)."""
    extra = link_properties(settings)
    for name in _LINKED:
        schemas[name]["properties"].update(extra)
    stored = schemas["Notification"]["properties"]
    stored["url"] = {"type": "string", "description": "present when it has one: open it on a click"}
    stored["actions"] = {
        "type": "array",
        "maxItems": MAX_ACTIONS,
        "description": "present when it has any",
        "items": {
            "type": "object",
            "required": ["label"],
            "properties": {name: {"type": "string"} for name in ("label", "url", "action")},
        },
    }
    return schemas


def locale_schema() -> Schema:
    return {"type": "string", "maxLength": MAX_LOCALE_CHARS, "pattern": LOCALE_REGEX}


def messaging_schemas() -> dict[str, Schema]:
    return {
        "LocaleInput": {
            "type": "object",
            "required": ["locale"],
            "additionalProperties": False,
            "properties": {
                "locale": {**locale_schema(), "type": ["string", "null"], "description": "null: the default"}
            },
        },
        "Locale": all_required(
            {
                "user_id": {"type": "string"},
                "locale": {"type": ["string", "null"], "description": "null: none of their own"},
                "default_locale": {"type": "string"},
            }
        ),
        "ActionAnswer": all_required(
            {
                "id": {"type": "string"},
                "user_id": {"type": "string"},
                "action": {"type": "string"},
                "answered_at": {"type": "string", "format": "date-time"},
                "recorded": {"type": "boolean", "description": "false: this answer was recorded before"},
            }
        ),
    }


def messaging_paths() -> dict[str, Any]:
    user_auth: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    user = {"name": "user_id", "in": "path", "required": True, "schema": user_id_schema()}
    return {
        "/v1/users/{user_id}/locale": {
            "get": {
                "summary": "The language the user's typed notifications are worded in",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "The user's locale", ref("Locale"), 400, *USER_ERRORS),
            },
            "put": {
                "summary": "Set the user's locale (null: the server's default)",
                "description": (
                    "Typed notifications (`kind`) are worded from templates in it, unless a send names"
                    " its own `locale`. Built in: " + ", ".join(BUILT_IN_LOCALES) + "; a tag"
                    " such as `de-AT` finds `de`; others fall back to the default."
                ),
                "security": user_auth,
                "parameters": [user],
                "requestBody": body(ref("LocaleInput")),
                "responses": responses(200, "Set", ref("Locale"), *BODY_ERRORS, *USER_ERRORS),
            },
        },
        "/v1/notifications/{notification_id}/actions/{action}": {
            "post": {
                "summary": "Answer one of a notification's actions, as its user",
                "description": (
                    "With the user's own token (an API key is refused). Recorded once: the same answer"
                    " again is `recorded: false`, another one a 409. The answer goes to the sender."
                ),
                "security": [{"userToken": []}],
                "parameters": [
                    {
                        "name": "notification_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": PATH_ID_REGEX},
                    },
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": ACTION_NAME_REGEX},
                    },
                ],
                "responses": responses(200, "Answered", ref("ActionAnswer"), 400, 401, 403, 404, 409, 503),
            }
        },
    }
