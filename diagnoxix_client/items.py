"""Typed notification items: name a kind and its facts, and the server words the notification
(title, message, type, data and priority) exactly as its own Python service does.

Each returns an item for `NotifyClient.send_batch`, beside items in your own words. The server
checks every field and answers 422 naming the ones to fix; a lab result never carries values, so it
takes no title, message, data or priority.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

AppointmentStatus = Literal["created", "confirmed", "cancelled", "rescheduled", "reminder"]
Priority = Literal["low", "normal", "high", "critical"]


def with_links(
    item: dict[str, Any],
    *,
    url: str | None = None,
    actions: Sequence[dict[str, str]] | None = None,
    locale: str | None = None,
) -> dict[str, Any]:
    """The item with a portal `url` (opened on a click), up to three `actions` (`{"label", "url"}`
    or `{"label", "action"}`: https links to the server's configured hosts) and, for a typed item,
    the `locale` to word it in (absent: the user's, else the server's default)."""
    for key, value in (("url", url), ("actions", list(actions) if actions else None), ("locale", locale)):
        if value is not None:
            item[key] = value
    return item


def appointment_item(
    user_id: str,
    appointment_id: str,
    status: AppointmentStatus,
    message: str | None = None,
    *,
    locale: str | None = None,
    url: str | None = None,
    actions: Sequence[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Titled by its status (a cancellation is high priority); `message` replaces our wording."""
    item: dict[str, Any] = {
        "kind": "appointment",
        "user_id": user_id,
        "appointment_id": appointment_id,
        "status": status,
    }
    if message:
        item["message"] = message
    return with_links(item, url=url, actions=actions, locale=locale)


def lab_result_item(
    user_id: str,
    test_name: str,
    abnormal: bool,
    *,
    locale: str | None = None,
    url: str | None = None,
    actions: Sequence[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Says the result is ready, never values; an abnormal result is high priority."""
    item = {"kind": "lab_result", "user_id": user_id, "test_name": test_name, "abnormal": abnormal}
    return with_links(item, url=url, actions=actions, locale=locale)


def ai_analysis_item(
    user_id: str,
    analysis_type: str,
    analysis_id: str,
    *,
    priority: Priority | None = None,
    locale: str | None = None,
    url: str | None = None,
    actions: Sequence[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """An analysis is ready to view (`symptom_analysis` reads "symptom analysis"); normal priority
    unless given one."""
    item: dict[str, Any] = {
        "kind": "ai_analysis",
        "user_id": user_id,
        "analysis_type": analysis_type,
        "analysis_id": analysis_id,
    }
    if priority is not None:
        item["priority"] = priority
    return with_links(item, url=url, actions=actions, locale=locale)
