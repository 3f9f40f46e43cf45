"""The OpenAPI paths and schemas of Web Push (`api.push`), built from `diagnoxix.rules.push`: the
VAPID public key, a user's push subscriptions, and one notification read by its id."""

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
from diagnoxix.rules.push import (
    AUTH_REGEX,
    MAX_ENDPOINT_CHARS,
    P256DH_REGEX,
    SUBSCRIPTION_ID_REGEX,
    endpoint_regex,
)


def push_paths() -> dict[str, Any]:
    user_auth: list[dict[str, list[str]]] = [{"apiKey": []}, {"userToken": []}]
    user = {"name": "user_id", "in": "path", "required": True, "schema": user_id_schema()}
    subscription = {
        "name": "subscription_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": SUBSCRIPTION_ID_REGEX},
    }
    notification = {
        "name": "notification_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": PATH_ID_REGEX},
    }
    return {
        "/v1/push/public-key": {
            "get": {
                "summary": "The server's VAPID public key, for pushManager.subscribe (applicationServerKey)",
                "responses": responses(200, "The key", ref("PushPublicKey")),
            }
        },
        "/v1/users/{user_id}/push-subscriptions": {
            "get": {
                "summary": "A user's push subscriptions (the push service's host, never the endpoint)",
                "security": user_auth,
                "parameters": [user],
                "responses": responses(200, "Subscriptions", ref("PushSubscriptionList"), 400, *USER_ERRORS),
            },
            "post": {
                "summary": "Register a browser's push subscription (PushSubscription.toJSON())",
                "description": (
                    "The same endpoint again is the same subscription (moved to this user if another had"
                    " it); past the per-user limit the oldest is removed."
                ),
                "security": user_auth,
                "parameters": [user],
                "requestBody": body(ref("PushSubscriptionInput")),
                "responses": responses(
                    201, "Registered", ref("PushSubscriptionCreated"), *BODY_ERRORS, *USER_ERRORS
                ),
            },
        },
        "/v1/users/{user_id}/push-subscriptions/{subscription_id}": {
            "delete": {
                "summary": "Delete one of a user's push subscriptions",
                "security": user_auth,
                "parameters": [user, subscription],
                "responses": responses(
                    200, "Deleted", ref("PushSubscriptionDeleted"), 400, 404, *USER_ERRORS
                ),
            }
        },
        "/v1/users/{user_id}/notifications/{notification_id}": {
            "get": {
                "summary": "One of a user's notifications (or a broadcast) by id (a service worker's read)",
                "security": user_auth,
                "parameters": [user, notification],
                "responses": responses(
                    200, "The notification", ref("OneNotification"), 400, 404, *USER_ERRORS
                ),
            }
        },
    }


def push_schemas(settings: Settings) -> dict[str, Schema]:
    b64url = {"type": "string", "pattern": "^[A-Za-z0-9_-]+={0,2}$"}
    return {
        "PushPublicKey": all_required(
            {
                "public_key": {**b64url, "description": "an uncompressed P-256 point, base64url"},
                "content_encoding": {"const": "aes128gcm"},
            }
        ),
        "PushSubscriptionInput": {
            "type": "object",
            "required": ["endpoint", "keys"],
            "additionalProperties": False,
            "properties": {
                "endpoint": {
                    "type": "string",
                    "maxLength": MAX_ENDPOINT_CHARS,
                    "pattern": endpoint_regex(settings.push_hosts, settings.push_allow_loopback),
                    "description": "https, at a push service of DIAGNOXIX_PUSH_HOSTS",
                },
                "expirationTime": {"type": ["number", "null"]},
                "keys": {
                    "type": "object",
                    "required": ["p256dh", "auth"],
                    "additionalProperties": False,
                    "properties": {
                        "p256dh": {"type": "string", "pattern": P256DH_REGEX},
                        "auth": {"type": "string", "pattern": AUTH_REGEX},
                    },
                },
            },
        },
        "PushSubscription": all_required(
            {
                "id": {"type": "string", "pattern": SUBSCRIPTION_ID_REGEX},
                "endpoint_host": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "user_agent": {"type": ["string", "null"]},
                "last_status": {"type": ["integer", "null"], "description": "the push service's last answer"},
                "last_sent_at": {"type": ["string", "null"], "format": "date-time"},
            }
        ),
        "PushSubscriptionList": all_required(
            {
                "user_id": {"type": "string"},
                "subscriptions": {"type": "array", "items": ref("PushSubscription")},
            }
        ),
        "PushSubscriptionCreated": all_required({"subscription": ref("PushSubscription")}),
        "PushSubscriptionDeleted": all_required(
            {"subscription_id": {"type": "string"}, "deleted": {"const": True}}
        ),
        "OneNotification": all_required({"notification": ref("Notification")}),
    }
