"""The webhook rules (`DIAGNOXIX_WEBHOOK_RULES`) applied to committed notifications.

Never in the request path: the store's commit listener only collects what was committed; a task
of its own applies the rules to everything collected so far, in one store write per batch. That
write carries the rules' cursor (the highest seq applied), so after a kill -9 the notifications
committed but not yet applied are found again at start (`notifications_between`) and each is
applied once: their events and the cursor commit together, or not at all.

A rule `when = "commit"` enqueues `notification.created` at once. A rule `when =
"unacknowledged"` stores a durable check due `after_seconds` after the notification was created;
when due (`UnacknowledgedChecks`), it enqueues `notification.unacknowledged` only if the
notification has not been delivered by then (acknowledged by a v1 client, written to a plain
one, or read), and was neither retracted nor expired. The check and the events it enqueues
commit together, once.

Neither goes to a user who switched the webhook channel off for the notification's type, or who
is in their quiet hours when it would go (`delivery.preferences`), unless it is critical: the
notification still reaches their open pages, history and offline queue as always.

What leaves: ids only (notification id, user id, type, priority, created_at); a rule with
`words = true` adds the title and message. Never `data`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from diagnoxix.delivery.digests import WEBHOOK_DIGEST, Digests
from diagnoxix.delivery.preferences import ChannelPreferences
from diagnoxix.delivery.webhooks import Webhooks
from diagnoxix.models import Notification, format_timestamp
from diagnoxix.rules.webhooks import NOTIFICATION_CREATED, NOTIFICATION_UNACKNOWLEDGED, WebhookRule
from diagnoxix.store.protocols import Store, StoreClosed, StoreError
from diagnoxix.store.timer_records import NewTimer, Timer
from diagnoxix.store.webhook_records import WEBHOOKS_OWNER

log = logging.getLogger("diagnoxix.webhooks")

# The kind of timer a rule's "not acknowledged within T" check is.
UNACKNOWLEDGED_CHECK = "webhook_unacknowledged"
# The channel's name in users' preferences (`rules.preferences.CHANNELS`).
WEBHOOK = "webhook"
# Notifications read per slice when catching up at start.
CATCH_UP_SLICE = 1000
# After the store failed to take a batch, it is tried again this much later (real seconds).
STORE_RETRY_SECONDS = 1.0


def notification_data(note: Notification, words: bool) -> dict[str, Any]:
    """What an event says of a notification: ids by default, the words only when opted in."""
    data: dict[str, Any] = {
        "notification_id": note.id,
        "user_id": note.user_id,
        "type": note.type,
        "priority": note.priority,
        "created_at": format_timestamp(note.created_at),
    }
    if words:
        data["title"] = note.title
        data["message"] = note.message
    return data


class WebhookTriggers:
    """Applies the rules to committed notifications. `start()` before the server commits anything
    (it hooks the commit listener and finds what was missed), then `run()` as a task."""

    def __init__(
        self,
        store: Store,
        webhooks: Webhooks,
        rules: Sequence[WebhookRule],
        chosen: ChannelPreferences,
        digests: Digests | None = None,
    ) -> None:
        self._store = store
        # A digested type's `notification.created` joins the user's digest instead (`delivery.digests`).
        self._digests = digests or Digests((), ())
        self._webhooks = webhooks
        self._rules = tuple(rules)
        self._chosen = chosen
        self._pending: list[Notification] = []
        self._ready = asyncio.Event()
        self._catch_up = (0, 0)

    def committed(self, notes: Sequence[Notification]) -> None:
        """The commit listener: collect, never wait."""
        self._pending.extend(notes)
        self._ready.set()

    async def start(self) -> None:
        if not self._rules:
            return
        # Nothing commits while the server starts (the timers run later), so `upto` is exact.
        upto = await self._store.last_seq()
        self._store.add_commit_listener(self.committed)
        cursor = await self._store.webhook_rules_cursor()
        if cursor is None:
            # The rules are new to this database: they apply from now on, not to its history.
            await self._store.enqueue_webhooks([], through_seq=upto)
            cursor = upto
        self._catch_up = (cursor, upto)

    async def run(self) -> None:
        if not self._rules:
            return
        try:
            after, upto = self._catch_up
            while after < upto:
                notes = await self._store.notifications_between(after, upto, limit=CATCH_UP_SLICE)
                through = notes[-1].seq if len(notes) == CATCH_UP_SLICE else upto
                await self._apply_retrying(notes, through)
                after = through
            while True:
                await self._ready.wait()
                self._ready.clear()
                batch, self._pending = self._pending, []
                if batch:
                    await self._apply_retrying(batch, batch[-1].seq)
        except StoreClosed:
            return

    async def _apply_retrying(self, notes: Sequence[Notification], through: int) -> None:
        while True:
            try:
                await self.apply(notes, through)
                return
            except StoreClosed:
                raise
            except StoreError as exc:
                log.warning("webhooks.rules_store_unavailable", extra={"error": type(exc).__name__})
                await asyncio.sleep(STORE_RETRY_SECONDS)

    async def apply(self, notes: Sequence[Notification], through: int) -> None:
        """The rules' events and checks for these notifications, and the cursor, in one write."""
        events: list[tuple[str, dict[str, Any]]] = []
        checks: list[NewTimer] = []
        joins: list[NewTimer] = []
        wanted = [note for note in notes if not note.is_broadcast]
        # Whether each user wants this channel now (asked only where a rule sends at commit).
        now_ok = iter(await self._chosen.allowed([n for n in wanted if self._at_commit(n)], WEBHOOK))
        for note in wanted:
            matching = [rule for rule in self._rules if rule.matches(note.type, note.priority)]
            at_commit = [rule.words for rule in matching if rule.when == "commit"]
            wants_it: bool = next(now_ok) if at_commit else False
            if wants_it and self._digests.digested(note):
                joins.append(self._digests.join(WEBHOOK_DIGEST, note, note.created_at))
            elif wants_it:
                events.append((NOTIFICATION_CREATED, notification_data(note, any(at_commit))))
            waits: dict[int, bool] = {}
            for rule in matching:
                if rule.when == "unacknowledged":
                    waits[rule.after_seconds] = waits.get(rule.after_seconds, False) or rule.words
            checks.extend(
                NewTimer(
                    kind=UNACKNOWLEDGED_CHECK,
                    owner=WEBHOOKS_OWNER,
                    due_at=note.created_at + timedelta(seconds=after),
                    payload={"notification_id": note.id, "words": words},
                )
                for after, words in sorted(waits.items())
            )
        if not events and not checks and not joins:
            self._store.note_webhook_rules_through(through)
            return
        await self._webhooks.enqueue_many(events, also=checks, through_seq=through, joins=joins)

    def _at_commit(self, note: Notification) -> bool:
        return any(r.when == "commit" and r.matches(note.type, note.priority) for r in self._rules)


class UnacknowledgedChecks:
    """The handler of `UNACKNOWLEDGED_CHECK` jobs (see the module's doc)."""

    def __init__(self, store: Store, webhooks: Webhooks, chosen: ChannelPreferences) -> None:
        self._store = store
        self._webhooks = webhooks
        self._chosen = chosen

    async def __call__(self, job: Timer) -> None:
        found = await self._store.get_notifications([str(job.payload["notification_id"])])
        if not found or found[0].delivered_at is not None or found[0].read_at is not None:
            await self._store.finish_timer(job.id)
            return
        if not (await self._chosen.allowed(found, WEBHOOK))[0]:  # switched off, or quiet hours now
            await self._store.finish_timer(job.id)
            return
        data = notification_data(found[0], bool(job.payload.get("words")))
        await self._webhooks.enqueue_many([(NOTIFICATION_UNACKNOWLEDGED, data)], claim_timer=job.id)
