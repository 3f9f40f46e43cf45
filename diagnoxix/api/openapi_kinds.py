"""The OpenAPI schemas of typed notification items, built from `diagnoxix.rules.kinds`: one schema
per kind (its `kind` const, `user_id` and its own fields, nothing else), the typed item as a oneOf
with `kind` as discriminator, and an item of a send as either shape."""

from __future__ import annotations

from diagnoxix.api.openapi_parts import Schema, ref, user_id_schema
from diagnoxix.rules import MAX_MESSAGE_CHARS, MAX_REFERENCE_CHARS, MESSAGE_REGEX, PRIORITIES
from diagnoxix.rules.kinds import (
    APPOINTMENT_STATUSES,
    KIND_FIELD,
    KINDS,
    REFERENCE_REGEX,
    FieldShape,
    Kind,
)
from diagnoxix.rules.locales import LOCALE_REGEX, MAX_LOCALE_CHARS

# An item of `POST /v1/notifications`: in its own words (`NotificationInput`) or typed.
ITEM = "NotificationItem"
TYPED = "TypedNotificationInput"


def schema_name(kind: str) -> str:
    """`lab_result` → `LabResultNotificationInput`."""
    return "".join(part.capitalize() for part in kind.split("_")) + "NotificationInput"


def _shape(shape: FieldShape) -> Schema:
    if shape == "reference":
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_REFERENCE_CHARS,
            "pattern": REFERENCE_REGEX,
        }
    if shape == "status":
        return {"enum": list(APPOINTMENT_STATUSES)}
    if shape == "flag":
        return {"type": "boolean"}
    if shape == "message":
        return {"type": ["string", "null"], "maxLength": MAX_MESSAGE_CHARS, "pattern": MESSAGE_REGEX}
    if shape == "locale":
        return {"type": ["string", "null"], "maxLength": MAX_LOCALE_CHARS, "pattern": LOCALE_REGEX}
    return {"enum": [*PRIORITIES, None]}


def _kind_schema(kind: Kind) -> Schema:
    return {
        "type": "object",
        "description": f"{kind.description} ({kind.fixed})",
        "required": [KIND_FIELD, "user_id", *(f.name for f in kind.fields if f.required)],
        "additionalProperties": False,
        "properties": {
            KIND_FIELD: {"const": kind.name},
            "user_id": user_id_schema(),
            **{f.name: {**_shape(f.shape), "description": f.description} for f in kind.fields},
        },
    }


def kind_schemas() -> dict[str, Schema]:
    """The component schemas a typed item needs, `NotificationInput` aside."""
    return {
        **{schema_name(kind.name): _kind_schema(kind) for kind in KINDS.values()},
        TYPED: {
            "description": "A typed notification: name its kind and facts, the server words it",
            "oneOf": [ref(schema_name(name)) for name in KINDS],
            "discriminator": {
                "propertyName": KIND_FIELD,
                "mapping": {name: f"#/components/schemas/{schema_name(name)}" for name in KINDS},
            },
        },
        ITEM: {
            "description": "A notification in your own words, or a typed one (with `kind`)",
            "oneOf": [ref("NotificationInput"), ref(TYPED)],
        },
    }
