"""The records of Web Push (`protocols.PushStore`): a user's push subscription, and what a push
service answered to one push."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from diagnoxix.models import format_timestamp

# The durable timers' kinds of the push outbox: one `push` job per notification to route (due at
# once, or once its acknowledgement is overdue), which becomes one `push_send` job per subscription.
PUSH_ROUTE = "push"
PUSH_SEND = "push_send"
# The jobs' owner (timers are listed per owner; no API key owns these).
PUSH_OWNER = "system:push"
PUSH_OUTCOMES = ("sent", "gone", "retry", "failed")


@dataclass(frozen=True, slots=True)
class NewPushSubscription:
    user_id: str
    endpoint: str
    p256dh: str
    auth: str
    host: str
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class PushSubscription:
    id: str
    user_id: str
    # Secrets: never logged, never shown (`to_api` names the host only).
    endpoint: str
    p256dh: str
    auth: str
    host: str
    created_at: datetime
    user_agent: str | None
    last_status: int | None
    last_sent_at: datetime | None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint_host": self.host,
            "created_at": format_timestamp(self.created_at),
            "user_agent": self.user_agent,
            "last_status": self.last_status,
            "last_sent_at": format_timestamp(self.last_sent_at) if self.last_sent_at else None,
        }


@dataclass(frozen=True, slots=True)
class PushAttempt:
    """One answer of a push service (`status` 0: none came), and what became of the push."""

    notification_id: str
    subscription_id: str
    host: str
    status: int
    outcome: str
    at: datetime | None = None
    # The push's RFC 8030 Topic (a retraction is pushed with the same one); None: a digest's, a
    # retraction's own, or recorded before topics were.
    topic: str | None = None
