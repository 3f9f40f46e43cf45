"""The store contract, messaging: the same tests on SQLite and PostgreSQL (`store_backends.store`).
Users' locales, staff's templates, an answer to a notification's actions recorded once and purged
with its notification."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from diagnoxix.clock import ManualClock
from diagnoxix.models import NotificationDraft
from diagnoxix.store.messaging_records import StoredTemplate


def _template(type: str, locale: str, title: str, by: str = "admin") -> StoredTemplate:
    return StoredTemplate(type, locale, title, "{{ when }}", datetime(2024, 1, 15, 10, 30, tzinfo=UTC), by)


async def test_a_users_locale_is_set_replaced_and_cleared(store: Any) -> None:
    assert await store.user_locales([]) == {}
    await store.set_user_locale("u1", "de")
    await store.set_user_locale("u2", "es")
    await store.set_user_locale("u1", "en-GB")
    assert await store.user_locales(["u1", "u2", "u3", "u1"]) == {"u1": "en-GB", "u2": "es"}
    await store.set_user_locale("u2", None)
    await store.set_user_locale("u3", None)  # none to clear: nothing happens
    assert await store.user_locales(["u1", "u2", "u3"]) == {"u1": "en-GB"}


async def test_the_locales_of_many_users_are_read_at_once(store: Any) -> None:
    users = [f"user-{i}" for i in range(2500)]
    await asyncio.gather(*(store.set_user_locale(u, "de") for u in users[::3]))
    found = await store.user_locales(users)
    assert found == {u: "de" for u in users[::3]}


async def test_templates_are_saved_replaced_listed_and_deleted(store: Any) -> None:
    assert await store.list_templates() == []
    await store.save_template(_template("lab_result_ready", "en", "Results"))
    await store.save_template(_template("appointment_reminder", "de", "Termin"))
    await store.save_template(_template("appointment_reminder", "en", "Appointment"))
    replaced = StoredTemplate(
        "lab_result_ready",
        "en",
        "Your results",
        "Ready",
        datetime(2024, 2, 1, 8, 0, 0, 123000, tzinfo=UTC),
        "ops",
    )
    await store.save_template(replaced)
    listed = await store.list_templates()
    assert [(t.type, t.locale, t.title) for t in listed] == [
        ("appointment_reminder", "de", "Termin"),
        ("appointment_reminder", "en", "Appointment"),
        ("lab_result_ready", "en", "Your results"),
    ]
    assert listed[-1] == replaced
    assert await store.delete_template("appointment_reminder", "de") is True
    assert await store.delete_template("appointment_reminder", "de") is False
    assert [t.locale for t in await store.list_templates()] == ["en", "en"]


async def test_an_answer_is_recorded_once_and_a_second_finds_the_first(
    store: Any, store_clock: ManualClock
) -> None:
    first = await store.record_action_answer("n-1", "u1", "confirm")
    assert (first.notification_id, first.user_id, first.action, first.recorded) == (
        "n-1",
        "u1",
        "confirm",
        True,
    )
    store_clock.advance(5)
    again = await store.record_action_answer("n-1", "u1", "decline")
    assert again == first.__class__("n-1", "u1", "confirm", first.answered_at, False)
    # Answers at once: one is recorded, each caller is told that one.
    results = await asyncio.gather(
        *(store.record_action_answer("n-2", "u2", action) for action in ("confirm", "decline", "later"))
    )
    assert [r.recorded for r in results].count(True) == 1
    assert len({(r.action, r.answered_at) for r in results}) == 1


async def test_an_answer_is_purged_with_its_notification(store: Any, store_clock: ManualClock) -> None:
    draft = NotificationDraft(
        user_id="u7",
        type="appointment",
        title="Tomorrow",
        message="",
        data={},
        priority="normal",
        ttl_seconds=60,
    )
    (note,) = await store.insert_notifications([draft])
    assert (await store.record_action_answer(note.id, "u7", "confirm")).recorded
    again = await store.record_action_answer(note.id, "u7", "decline")
    assert (again.recorded, again.action) == (False, "confirm")
    store_clock.advance(61)
    while await store.purge_expired():
        pass
    # The answer went with the notification: a new one for that id would be the first.
    fresh = await store.record_action_answer(note.id, "u7", "decline")
    assert (fresh.recorded, fresh.action) == (True, "decline")
