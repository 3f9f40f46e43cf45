"""The typed senders backend code calls: the seed guide's methods, in Python.

Each one validates, stores (durably, before anything is sent) and returns the stored notification.
Delivery follows from the commit: the store hands committed notifications to the broker, which
fans them out to the hub of every process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from diagnoxix.config import Settings
from diagnoxix.delivery import frames
from diagnoxix.delivery.broker import Broker
from diagnoxix.delivery.wording import TemplateBook
from diagnoxix.models import BROADCAST_RECIPIENT, PRIORITIES, Notification, NotificationDraft, Priority
from diagnoxix.rules import validated_draft
from diagnoxix.rules.kinds import (
    APPOINTMENT_STATUSES,
    AppointmentStatus,
    ai_analysis_draft,
    appointment_draft,
    lab_result_draft,
)
from diagnoxix.rules.links import LinkPolicy, checked_links
from diagnoxix.store.protocols import (
    Correction,
    CorrectionResult,
    CorrectionStore,
    IdempotencyClaim,
    NotificationStore,
)

# The dashboard's form lists the statuses; each kind's rules and wording are in `rules.kinds`, which
# the HTTP API's typed items read too. The input rules (`validated_draft`, references) live in
# `diagnoxix.rules` with every other one.
__all__ = ["APPOINTMENT_STATUSES", "AppointmentStatus", "NotificationService", "Tracker"]

# Opens a critical item for one validated draft to one user, sent by `sender` ("apikey:<id>",
# "staff:<name>", "service"), and returns its first copy (`CriticalService.track`).
Tracker = Callable[[str, NotificationDraft], Awaitable[Notification]]
# Who an in-process send is from, when the caller names nobody.
IN_PROCESS = "service"


class NotificationService:
    def __init__(
        self,
        store: NotificationStore,
        broker: Broker,
        settings: Settings,
        *,
        templates: TemplateBook | None = None,
    ) -> None:
        self._store = store
        # Typed notifications are worded from templates in their user's locale (None: in English).
        self._templates = templates
        # Where a notification's `url` and actions may point.
        self.links = LinkPolicy(settings.link_hosts, settings.dev)
        # Control frames (unread counts) go where notifications go: through the broker, to the
        # user's connections in every process.
        self._broker = broker
        self._settings = settings
        # Retention by priority (and for broadcasts), applied by the store to drafts naming none.
        self._lifetimes: dict[str, int] = {p: settings.retention_seconds(p) for p in PRIORITIES}
        self._lifetimes[BROADCAST_RECIPIENT] = settings.broadcast_ttl_seconds
        # ... and by type where configured, in place of the priority's (not for broadcasts).
        self._lifetimes_by_type = settings.retention_seconds_by_type()
        # Set by the assembly once critical results exist: a typed sender's critical draft opens
        # an item there (kept open until acknowledged, escalated by policy) instead of a plain send.
        self.tracker: Tracker | None = None

    async def send(
        self, drafts: Sequence[NotificationDraft], *, idempotency: IdempotencyClaim | None = None
    ) -> list[Notification]:
        """Store validated drafts in one transaction; they are delivered once committed.

        Each gets its retention from its type if one is configured for it, else from its
        priority, unless it names its own lifetime. Typed ones are worded first (`word`).

        The storing primitive: a critical draft stored here is NOT a tracked item (critical
        results store their own copies through it). Send through `send_one` (or a typed sender,
        which does), or `CriticalService.open`, to have it kept open until acknowledged.
        """
        await self.word(drafts)
        by_type = self._lifetimes_by_type
        if by_type:
            drafts = [
                replace(d, ttl_seconds=by_type[d.type])
                if d.ttl_seconds is None and d.type in by_type and d.user_id != BROADCAST_RECIPIENT
                else d
                for d in drafts
            ]
        return await self._store.insert_notifications(drafts, idempotency, lifetimes=self._lifetimes)

    async def send_one(self, draft: NotificationDraft, *, sender: str = IN_PROCESS) -> Notification:
        """Store one validated draft: a critical one to a user opens an item (`tracker`), exactly
        once, like `POST /v1/notifications`; any other (and any broadcast) is a plain send."""
        if self.tracker is not None and draft.priority == "critical" and draft.user_id != BROADCAST_RECIPIENT:
            return await self.tracker(sender, draft)
        (stored,) = await self.send([draft])
        return stored

    async def word(self, drafts: Sequence[NotificationDraft]) -> None:
        """Word typed drafts from their templates, in place (a scheduled send is worded when it is
        scheduled); the others are left as they are."""
        if self._templates is not None:
            await self._templates.word(drafts)

    def _linked(
        self, draft: NotificationDraft, url: str | None, actions: list[dict[str, Any]] | None
    ) -> NotificationDraft:
        if url is not None or actions:
            draft.links = checked_links(url, actions, self.links)
        return draft

    async def mark_read(self, user_id: str, notification_ids: Sequence[str]) -> tuple[list[str], int]:
        """Mark read, then tell every v1 connection of the user the new unread count at once."""
        marked = await self._store.mark_read(user_id, notification_ids)
        return marked, await self._push_unread(user_id)

    async def mark_all_read(self, user_id: str) -> tuple[int, int]:
        changed = await self._store.mark_all_read(user_id)
        return changed, await self._push_unread(user_id)

    async def retract(self, store: CorrectionStore, notification_id: str) -> CorrectionResult:
        """Retract a notification sent in error: it leaves history, unread counts and replay, and
        every v1 connection of its user (of everyone, for a broadcast) gets a `retracted` frame,
        then a new unread count if it was unread. Retracting it again changes nothing."""
        result = await store.retract_notification(notification_id)
        if result.outcome == "done":
            await self._fan_out(result)
        return result

    async def update(
        self, store: CorrectionStore, notification_id: str, *, title: str | None, message: str | None
    ) -> CorrectionResult:
        """New words for a notification (None keeps one); every v1 connection of its user gets an
        `updated` frame. A retracted notification stays retracted (`already`)."""
        result = await store.update_notification(notification_id, title=title, message=message)
        if result.outcome == "done":
            await self._fan_out(result)
        return result

    async def _fan_out(self, result: CorrectionResult) -> None:
        # The correction's own frame went out from the commit (`publish_correction`).
        fix = result.correction
        if fix is not None and result.was_unread:
            await self._push_unread(fix.user_id)

    def publish_correction(self, fix: Correction) -> None:
        """A committed correction's frame to the user's v1 connections in every process. The store
        calls it from the commit itself, in seq order with the notifications, so no client can get
        a later notification first (its resume cursor would then skip the correction)."""
        frame = frames.correction(fix)
        if frame is not None:
            self._broker.send_control(fix.user_id, frame, fix.seq)

    async def _push_unread(self, user_id: str) -> int:
        count = await self._store.unread_count(user_id)
        self._broker.send_control(user_id, frames.unread(count))
        return count

    async def create_and_send_notification(
        self,
        user_id: str,
        type: str,
        title: str,
        message: str,
        data: dict[str, Any] | None = None,
        *,
        priority: Priority = "normal",
        url: str | None = None,
        actions: list[dict[str, Any]] | None = None,
        sender: str = IN_PROCESS,
    ) -> Notification:
        """`url` (opened on a click) and `actions` (up to three) are checked against the link hosts.
        Priority `critical` opens a critical item (see `send_one`); `sender` names who sent it."""
        draft = validated_draft(user_id, type, title, message, data, priority)
        return await self.send_one(self._linked(draft, url, actions), sender=sender)

    async def send_appointment_notification(
        self,
        user_id: str,
        appointment_id: str,
        status: AppointmentStatus,
        message: str = "",
        *,
        locale: str | None = None,
        url: str | None = None,
        actions: list[dict[str, Any]] | None = None,
        sender: str = IN_PROCESS,
    ) -> Notification:
        """Titled by the status, with our message unless given one; high priority when cancelled.
        Worded in `locale` (None: the user's, else the default)."""
        draft = appointment_draft(user_id, appointment_id, status, message, locale=locale)
        return await self.send_one(self._linked(draft, url, actions), sender=sender)

    async def send_lab_result_notification(
        self,
        user_id: str,
        test_name: str,
        abnormal: bool,
        *,
        locale: str | None = None,
        url: str | None = None,
        actions: list[dict[str, Any]] | None = None,
        sender: str = IN_PROCESS,
    ) -> Notification:
        """Says the result is ready; never carries values. An abnormal result is high priority."""
        draft = lab_result_draft(user_id, test_name, abnormal, locale=locale)
        return await self.send_one(self._linked(draft, url, actions), sender=sender)

    async def send_ai_analysis_notification(
        self,
        user_id: str,
        analysis_type: str,
        analysis_id: str,
        *,
        priority: Priority = "normal",
        locale: str | None = None,
        url: str | None = None,
        actions: list[dict[str, Any]] | None = None,
        sender: str = IN_PROCESS,
    ) -> Notification:
        draft = ai_analysis_draft(user_id, analysis_type, analysis_id, priority, locale=locale)
        return await self.send_one(self._linked(draft, url, actions), sender=sender)

    async def broadcast_system_notification(
        self,
        title: str,
        message: str,
        data: dict[str, Any] | None = None,
        *,
        type: str = "system",
        priority: Priority = "normal",
        ttl_seconds: int | None = None,
    ) -> Notification:
        """Stored once, delivered to every connection open now and, until it expires, to every
        user who connects later."""
        draft = validated_draft(BROADCAST_RECIPIENT, type, title, message, data, priority, ttl_seconds)
        (stored,) = await self.send([draft])
        return stored
