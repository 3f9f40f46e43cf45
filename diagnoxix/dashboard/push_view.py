"""Web Push on a user's page: their push subscriptions (the push service's host only; the
endpoint is a secret), with a Delete button for admins (`pages_push`), and what the push services
answered for the notifications on the page (whether a push went out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diagnoxix.models import Notification
from diagnoxix.store.protocols import Store


async def push_context(store: Store, user_id: str, history: Sequence[Notification]) -> dict[str, Any]:
    """The user page's push section: subscriptions, and the answers per notification shown."""
    attempts = await store.push_attempts([note.id for note in history])
    return {
        "push_subscriptions": await store.list_push_subscriptions(user_id),
        "pushes": [(note, attempts[note.id]) for note in history if note.id in attempts],
    }
