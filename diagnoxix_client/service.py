"""`NotifyClient`: the HTTP API for a clinic's backend services (sending, tokens, history,
corrections), with `NotifyError` for every refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from diagnoxix_client.items import (
    AppointmentStatus,
    Priority,
    ai_analysis_item,
    appointment_item,
    lab_result_item,
    with_links,
)


class NotifyError(Exception):
    """An error answer from the server, with its stable code."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class NotifyClient:
    """The HTTP API for a backend service holding an API key."""

    def __init__(self, base_url: str, api_key: str, *, session: aiohttp.ClientSession | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> NotifyClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method, self._base + path, json=body, headers={**self._headers, **(headers or {})}
        ) as resp:
            payload = await resp.json(content_type=None)
            if resp.status >= 400:
                error = (payload or {}).get("error", {})
                raise NotifyError(
                    resp.status, error.get("code", "error"), error.get("message", ""), error.get("details")
                )
            return payload

    async def send(
        self,
        user_id: str,
        title: str,
        message: str = "",
        *,
        type: str | None = None,
        data: dict[str, Any] | None = None,
        priority: str | None = None,
        url: str | None = None,
        actions: Sequence[dict[str, str]] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """`url` is opened when the user clicks it; `actions` (up to three) are buttons:
        `{"label", "url"}` or `{"label", "action"}` (an answer that comes back to you)."""
        item = with_links(_item(user_id, title, message, type, data, priority), url=url, actions=actions)
        return await self._send_one(item, idempotency_key)

    # Typed sends: the server words them as its own Python service does (see `items`).

    async def send_appointment(
        self,
        user_id: str,
        appointment_id: str,
        status: AppointmentStatus,
        message: str | None = None,
        *,
        idempotency_key: str | None = None,
        **links: Any,
    ) -> dict[str, Any]:
        """`links`: `locale`, `url`, `actions` (see `items.with_links`)."""
        item = appointment_item(user_id, appointment_id, status, message, **links)
        return await self._send_one(item, idempotency_key)

    async def send_lab_result(
        self,
        user_id: str,
        test_name: str,
        abnormal: bool,
        *,
        idempotency_key: str | None = None,
        **links: Any,
    ) -> dict[str, Any]:
        """Says the result is ready, never values; an abnormal result is high priority."""
        return await self._send_one(lab_result_item(user_id, test_name, abnormal, **links), idempotency_key)

    async def send_ai_analysis(
        self,
        user_id: str,
        analysis_type: str,
        analysis_id: str,
        *,
        priority: Priority | None = None,
        idempotency_key: str | None = None,
        **links: Any,
    ) -> dict[str, Any]:
        item = ai_analysis_item(user_id, analysis_type, analysis_id, priority=priority, **links)
        return await self._send_one(item, idempotency_key)

    async def _send_one(self, item: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        result = await self._call("POST", "/v1/notifications", item, headers)
        return dict(result["notification"])

    async def send_batch(
        self, items: Sequence[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Up to 1,000 items in one transaction: in your own words (`{"user_id", "title", ...}`) or
        typed (`appointment_item`, `lab_result_item`, `ai_analysis_item`)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        result = await self._call("POST", "/v1/notifications", {"notifications": list(items)}, headers)
        return list(result["notifications"])

    async def broadcast(
        self, title: str, message: str = "", *, data: dict[str, Any] | None = None, ttl: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"title": title, "message": message}
        if data is not None:
            body["data"] = data
        if ttl is not None:
            body["ttl"] = ttl
        return dict(await self._call("POST", "/v1/broadcasts", body))

    async def mint_token(self, user_id: str, ttl: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"user_id": user_id}
        if ttl is not None:
            body["ttl"] = ttl
        return dict(await self._call("POST", "/v1/tokens", body))

    async def history(
        self, user_id: str, *, before: int | None = None, limit: int = 50, type: str | None = None,
        unread: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """A page, newest first: `{"notifications": [...], "next_cursor": seq or None}`; pass
        `next_cursor` (an integer seq) as `before` for the next page."""
        query = f"?limit={limit}"
        query += f"&before={before}" if before is not None else ""
        query += f"&type={type}" if type else ""
        query += "&unread=true" if unread else ""
        return dict(await self._call("GET", f"/v1/users/{user_id}/notifications{query}"))

    async def mark_read(self, user_id: str, ids: Sequence[str]) -> dict[str, Any]:
        return dict(await self._call("POST", f"/v1/users/{user_id}/notifications/read", {"ids": list(ids)}))

    async def set_locale(self, user_id: str, locale: str | None) -> dict[str, Any]:
        """The language the user's typed notifications are worded in (None: the server's default)."""
        return dict(await self._call("PUT", f"/v1/users/{user_id}/locale", {"locale": locale}))

    async def unread_count(self, user_id: str) -> int:
        return int((await self._call("GET", f"/v1/users/{user_id}/unread-count"))["unread"])

    # A user's channel preferences: which channels beyond the socket per category, quiet hours.

    async def preferences(self, user_id: str) -> dict[str, Any]:
        return dict(await self._call("GET", f"/v1/users/{quote(user_id, safe='')}/preferences"))

    async def set_preferences(
        self,
        user_id: str,
        *,
        time_zone: str = "UTC",
        quiet_hours: tuple[str, str] | None = None,
        channels: dict[str, dict[str, bool]] | None = None,
    ) -> dict[str, Any]:
        """Replace them whole: `quiet_hours` as ("22:00", "07:00") on the user's clock in
        `time_zone`; `channels` as {"appointment_reminder": {"push": False}, "*": {...}}."""
        body: dict[str, Any] = {
            "time_zone": time_zone,
            "quiet_hours": None if quiet_hours is None else {"start": quiet_hours[0], "end": quiet_hours[1]},
            "channels": channels or {},
        }
        return dict(await self._call("PUT", f"/v1/users/{quote(user_id, safe='')}/preferences", body))

    async def reset_preferences(self, user_id: str) -> dict[str, Any]:
        """Back to the defaults: every channel, no quiet hours."""
        return dict(await self._call("DELETE", f"/v1/users/{quote(user_id, safe='')}/preferences"))

    # Corrections: a notification sent in error, or with the wrong words. The reason is audited.

    async def retract(self, notification_id: str, reason: str) -> dict[str, Any]:
        """Take it back: gone from history, unread counts and every device. Retracting twice is
        fine (`"changed": false`)."""
        path = f"/v1/notifications/{quote(notification_id, safe='')}/retract"
        return dict(await self._call("POST", path, {"reason": reason}))

    async def update(
        self, notification_id: str, *, reason: str, title: str | None = None, message: str | None = None
    ) -> dict[str, Any]:
        """New words (title and/or message) on every device; a retracted one is a 409."""
        body: dict[str, Any] = {"reason": reason}
        if title is not None:
            body["title"] = title
        if message is not None:
            body["message"] = message
        return dict(await self._call("PATCH", f"/v1/notifications/{quote(notification_id, safe='')}", body))

    # Critical results (docs/critical.md): groups, group sends, acknowledgements.

    async def set_group_member(self, group: str, user_id: str, *, on_duty: bool = True) -> dict[str, Any]:
        """Add a member to a group (created if need be), or switch them on or off duty."""
        path = f"/v1/groups/{quote(group, safe=':@')}"
        await self._call("PUT", path)
        return dict(
            await self._call("PUT", f"{path}/members/{quote(user_id, safe=':@')}", {"on_duty": on_duty})
        )

    async def send_to_group(self, group: str, title: str, message: str = "", **fields: Any) -> dict[str, Any]:
        """Each member on duty gets their own copy; `{"critical", "notifications"}`."""
        body = {"title": title, "message": message, **fields}
        return dict(await self._call("POST", f"/v1/groups/{quote(group, safe=':@')}/notifications", body))

    async def acknowledgement(self, notification_id: str) -> dict[str, Any]:
        """The status of the critical item this notification is a copy of: open or acknowledged
        (by whom, when, how), its recipients and when its next escalation step is due."""
        path = f"/v1/notifications/{quote(notification_id, safe='')}/acknowledgement"
        return dict(await self._call("GET", path))

    async def acknowledge_on_behalf(self, notification_id: str, reason: str) -> dict[str, Any]:
        """Close the critical item for every recipient (the reason is audited)."""
        path = f"/v1/notifications/{quote(notification_id, safe='')}/acknowledgement"
        return dict(await self._call("POST", path, {"reason": reason}))


def _item(
    user_id: str,
    title: str,
    message: str,
    kind: str | None,
    data: dict[str, Any] | None,
    priority: str | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"user_id": user_id, "title": title, "message": message}
    for key, value in (("type", kind), ("data", data), ("priority", priority)):
        if value is not None:
            item[key] = value
    return item
