"""What a push may say (minimum necessary): the push services belong to Google, Apple and Mozilla,
so by default a push carries a generic title and the notification's id, nothing else. The
service worker fetches the rest over the API with the user's credentials, or shows the generic
text. Types named in `DIAGNOXIX_PUSH_TITLED_TYPES` carry their own title."""

from __future__ import annotations

from diagnoxix.json_encoding import encode_json
from diagnoxix.models import Notification

GENERIC_TITLE = "New message from your clinic"
# RFC 8030 Urgency by priority: a critical result may wake a phone, a low one waits for it.
URGENCY = {"low": "low", "normal": "normal", "high": "high", "critical": "high"}


def push_payload(note: Notification, titled_types: tuple[str, ...]) -> bytes:
    """The push's plaintext (encrypted for the browser before it leaves, RFC 8291)."""
    title = note.title if note.type in titled_types else GENERIC_TITLE
    return encode_json({"id": note.id, "title": title}).encode("utf-8")


def push_topic(note: Notification) -> str:
    """RFC 8030 Topic: a push not yet delivered to the browser is replaced by a later one with the
    same topic. One per priority: a later message replaces an earlier one's alert, and a normal
    one never hides a critical one (the service worker fetches what is new either way)."""
    return f"diagnoxix-{note.priority}"


def push_ttl(note: Notification, now_unix: float, ceiling: int) -> int:
    """Seconds a push service may keep the push: the ceiling, never past the notification's expiry."""
    if note.expires_at is None:
        return ceiling
    return max(0, min(ceiling, int(note.expires_at.timestamp() - now_unix)))
