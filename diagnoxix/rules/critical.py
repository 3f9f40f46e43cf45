"""What requests about critical results may say: group names, members, `requires_ack`, an
acknowledgement on behalf (its reason)."""

from __future__ import annotations

from typing import Any

from diagnoxix.rules.corrections import check_reason
from diagnoxix.rules.escalation import GROUP_NAME_REGEX, is_group_name
from diagnoxix.rules.fields import FieldErrors

__all__ = [
    "GROUP_NAME_REGEX",
    "REQUIRES_ACK",
    "is_group_name",
    "parse_on_behalf",
    "parse_on_duty",
    "take_requires_ack",
]

# An item of a send may say it must be acknowledged by a person (a critical one always must).
REQUIRES_ACK = "requires_ack"


def take_requires_ack(item: object, prefix: str, errors: FieldErrors) -> tuple[object, bool]:
    """The item without `requires_ack` (the rest is parsed as a send), and its value."""
    if not isinstance(item, dict) or REQUIRES_ACK not in item:
        return item, False
    value = item[REQUIRES_ACK]
    if not isinstance(value, bool):
        errors.add(f"{prefix}{REQUIRES_ACK}", "must be true or false")
    rest = {k: v for k, v in item.items() if k != REQUIRES_ACK}
    return rest, value is True


def parse_on_duty(payload: dict[str, Any], errors: FieldErrors) -> bool:
    """`{"on_duty"?}` (default true) of a group member."""
    for name in sorted(set(payload) - {"on_duty"}):
        errors.add(name, "is not a known field")
    value = payload.get("on_duty", True)
    if not isinstance(value, bool):
        errors.add("on_duty", "must be true or false")
        return True
    return value


def parse_on_behalf(payload: dict[str, Any], errors: FieldErrors) -> str:
    """`{"reason"}`: why someone acknowledges for the recipients (required; audited)."""
    for name in sorted(set(payload) - {"reason"}):
        errors.add(name, "is not a known field")
    return check_reason(payload, errors)
