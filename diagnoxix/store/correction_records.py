"""The records of corrections (`protocols.CorrectionStore`): a retraction or an update, and what
a call to make one did."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

CorrectionKind = Literal["retracted", "updated", "acknowledged"]


@dataclass(frozen=True, slots=True)
class Correction:
    """A notification retracted, updated or acknowledged (its critical item closed): an event
    with its own seq in its recipient's stream (`user_id`, '*' for a broadcast), after every seq
    handed out before it. Never the reason (that is the audit log's); an update carries the
    notification's words as they are now."""

    seq: int
    id: str
    notification_id: str
    user_id: str
    kind: CorrectionKind
    at: datetime
    title: str | None = None
    message: str | None = None
    # An `acknowledged` one's: the critical item's id, who acknowledged, whether on behalf.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    """What a retraction or an update did. `done`: this call made `correction`; `already`: the
    notification was retracted before (`correction` is that retraction: retracting again changes
    nothing, updating is refused); `not_found`: no such notification, or it expired."""

    outcome: Literal["done", "already", "not_found"]
    correction: Correction | None = None
    # A retraction took away one of its user's unread notifications: their count changed.
    was_unread: bool = False
