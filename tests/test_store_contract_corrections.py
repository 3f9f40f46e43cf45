"""The store contract, corrections: the same tests on SQLite and PostgreSQL
(`store_backends.store`).

A retraction takes the notification out of every read and takes a seq of its own; an update
changes the words in place; both replay after a cursor in seq order with the notifications, and
are heard by the correction listeners in commit order with them."""

from __future__ import annotations

import asyncio
from typing import Any

from diagnoxix.clock import ManualClock
from diagnoxix.models import BROADCAST_RECIPIENT, NotificationDraft
from diagnoxix.store.protocols import Correction

ALL = 10**9


def _draft(user: str = "u1", title: str = "t", **fields: Any) -> NotificationDraft:
    return NotificationDraft(
        user_id=user, type="custom", title=title, message="m", data={}, priority="normal", **fields
    )


def _heard(store: Any) -> list[Correction]:
    heard: list[Correction] = []
    store.add_correction_listener(heard.append)
    return heard


async def test_a_retraction_takes_the_notification_out_of_every_read(store: Any) -> None:
    heard = _heard(store)
    keep, wrong = await store.insert_notifications([_draft("u1", "keep"), _draft("u1", "wrong")])
    (theirs,) = await store.insert_notifications([_draft("u2", "theirs")])

    result = await store.retract_notification(wrong.id)
    assert result.outcome == "done"
    assert result.was_unread is True
    fix = result.correction
    assert fix is not None
    assert (fix.kind, fix.notification_id, fix.user_id) == ("retracted", wrong.id, "u1")
    assert fix.seq == theirs.seq + 1
    assert (fix.title, fix.message, fix.details) == (None, None, {})
    assert heard == [fix]
    # Gone from history, unread counts, replay, lookups; nothing of it can be acknowledged or read.
    assert [n.id for n in await store.history("u1", before_seq=None, limit=10)] == [keep.id]
    assert await store.unread_count("u1") == 1
    assert await store.notifications_for("u1", after_seq=0, upto_seq=ALL, limit=10) == [keep]
    assert await store.get_notifications([wrong.id]) == []
    assert await store.acknowledge("u1", [wrong.id]) == []
    assert await store.mark_read("u1", [wrong.id]) == []
    assert (await store.counts()).stored == 2
    # The retraction takes a seq: the stream's newest event, and the next one comes after it.
    assert await store.last_seq() == fix.seq
    (after,) = await store.insert_notifications([_draft("u1", "after")])
    assert after.seq == fix.seq + 1

    # Again: nothing changes, nobody is told twice, the answer names the first retraction.
    again = await store.retract_notification(wrong.id)
    assert (again.outcome, again.correction, again.was_unread) == ("already", fix, False)
    assert heard == [fix]
    assert (await store.retract_notification("no-such-id")).outcome == "not_found"
    for odd in ("\x00", "x\ud800", ""):
        assert (await store.retract_notification(odd)).outcome == "not_found"
        assert (await store.update_notification(odd, title="t", message=None)).outcome == "not_found"


async def test_a_read_notification_retracted_changes_no_unread_count(store: Any) -> None:
    (note,) = await store.insert_notifications([_draft("u1")])
    await store.mark_read("u1", [note.id])
    result = await store.retract_notification(note.id)
    assert (result.outcome, result.was_unread) == ("done", False)


async def test_an_update_changes_the_words_in_place(store: Any) -> None:
    heard = _heard(store)
    (note,) = await store.insert_notifications([_draft("u1", "Appointment Confirmed")])
    result = await store.update_notification(note.id, title=None, message="Tomorrow at 3:00 PM")
    assert result.outcome == "done"
    fix = result.correction
    assert fix is not None
    assert (fix.kind, fix.seq, fix.user_id) == ("updated", note.seq + 1, "u1")
    assert (fix.title, fix.message) == ("Appointment Confirmed", "Tomorrow at 3:00 PM")
    assert heard == [fix]
    (stored,) = await store.history("u1", before_seq=None, limit=10)
    assert (stored.seq, stored.title, stored.message) == (
        note.seq,
        "Appointment Confirmed",
        "Tomorrow at 3:00 PM",
    )
    assert await store.unread_count("u1") == 1
    second = await store.update_notification(note.id, title="Moved", message=None)
    assert second.correction is not None
    assert (second.correction.title, second.correction.message) == ("Moved", "Tomorrow at 3:00 PM")
    # Retracted, it can no longer be updated: the answer names the retraction.
    retraction = (await store.retract_notification(note.id)).correction
    refused = await store.update_notification(note.id, title="Too late", message=None)
    assert (refused.outcome, refused.correction) == ("already", retraction)
    assert (await store.update_notification("no-such-id", title="t", message=None)).outcome == "not_found"
    assert len(heard) == 3


async def test_an_expired_notification_cannot_be_corrected(store: Any, store_clock: ManualClock) -> None:
    heard = _heard(store)
    (note,) = await store.insert_notifications([_draft("u1", ttl_seconds=60)])
    store_clock.advance(61)
    assert (await store.retract_notification(note.id)).outcome == "not_found"
    assert (await store.update_notification(note.id, title="t", message=None)).outcome == "not_found"
    assert heard == []
    assert await store.last_seq() == note.seq


async def test_a_broadcast_is_retractable_and_leaves_everyone(store: Any) -> None:
    (sent,) = await store.insert_notifications([_draft(BROADCAST_RECIPIENT, "Maintenance")])
    store.record_deliveries([], [(sent.id, "u1")])
    await store.flush()
    result = await store.retract_notification(sent.id)
    assert (result.outcome, result.was_unread) == ("done", False)
    fix = result.correction
    assert fix is not None
    assert fix.user_id == BROADCAST_RECIPIENT
    for user in ("u1", "u2"):
        assert await store.history(user, before_seq=None, limit=10) == []
        assert await store.corrections_for(user, after_seq=sent.seq, upto_seq=ALL, limit=10) == [fix]


async def test_corrections_replay_after_a_cursor_in_seq_order(store: Any) -> None:
    first, second = await store.insert_notifications([_draft("u1", "First"), _draft("u1", "Second")])
    cursor = second.seq
    (stranger,) = await store.insert_notifications([_draft("u2", "Not yours")])
    retracted = (await store.retract_notification(first.id)).correction
    updated = (await store.update_notification(second.id, title="Second, corrected", message=None)).correction
    (third,) = await store.insert_notifications([_draft("u1", "Third")])
    assert (await store.retract_notification(stranger.id)).outcome == "done"
    assert retracted is not None
    assert updated is not None

    fixes = await store.corrections_for("u1", after_seq=cursor, upto_seq=ALL, limit=10)
    assert [(f.kind, f.seq) for f in fixes] == [("retracted", retracted.seq), ("updated", updated.seq)]
    assert fixes[1].title == "Second, corrected"
    assert fixes == [retracted, updated]
    notes = await store.notifications_for("u1", after_seq=cursor, upto_seq=ALL, limit=10)
    assert notes == [third]
    assert retracted.seq < updated.seq < third.seq
    # Past a correction, it never comes again; bounds and limits as for notifications.
    assert await store.corrections_for("u1", after_seq=retracted.seq, upto_seq=ALL, limit=10) == [updated]
    assert await store.corrections_for("u1", after_seq=cursor, upto_seq=retracted.seq, limit=10) == [
        retracted
    ]
    assert await store.corrections_for("u1", after_seq=cursor, upto_seq=ALL, limit=1) == [retracted]
    assert await store.corrections_for("u1", after_seq=updated.seq, upto_seq=ALL, limit=10) == []
    # An update whose notification is gone since comes without words.
    await store.retract_notification(second.id)
    gone = await store.corrections_for("u1", after_seq=retracted.seq, upto_seq=updated.seq, limit=10)
    assert [(f.kind, f.seq, f.title, f.message) for f in gone] == [("updated", updated.seq, None, None)]


async def test_concurrent_retractions_of_one_notification_make_one(store: Any) -> None:
    heard = _heard(store)
    (note,) = await store.insert_notifications([_draft("u1")])
    results = await asyncio.gather(*(store.retract_notification(note.id) for _ in range(5)))
    assert sorted(r.outcome for r in results) == ["already"] * 4 + ["done"]
    (made,) = heard
    assert all(r.correction == made for r in results)
    assert await store.last_seq() == made.seq == note.seq + 1


async def test_corrections_are_heard_in_commit_order_with_the_notifications(store: Any) -> None:
    """What the broker publishes, in the order it hears it: every notification and correction of
    the stream in strictly increasing seq order, however the writes share and follow transactions
    (a correction heard after a later notification would be lost on a device already past it)."""
    heard: list[tuple[str, int]] = []
    store.add_commit_listener(lambda notes: heard.extend(("note", n.seq) for n in notes))
    store.add_correction_listener(lambda fix: heard.append((fix.kind, fix.seq)))
    targets = await store.insert_notifications([_draft(title=f"old {i}") for i in range(60)])

    async def correct_all() -> None:
        for i, note in enumerate(targets):
            if i % 2:
                assert (await store.retract_notification(note.id)).outcome == "done"
            else:
                result = await store.update_notification(note.id, title=f"fixed {i}", message=None)
                assert result.outcome == "done"

    async def send_some(stream: int) -> None:
        for i in range(15):
            await store.insert_notifications([_draft(title=f"new {stream}.{i}")])

    await asyncio.gather(correct_all(), *(send_some(stream) for stream in range(4)))
    later = heard[60:]
    assert sorted(kind for kind, _ in later) == ["note"] * 60 + ["retracted"] * 30 + ["updated"] * 30
    seqs = [seq for _, seq in heard]
    assert seqs == sorted(set(seqs))
    # Nothing is heard twice: a correction that found nothing to correct is not published.
    assert (await store.retract_notification(targets[1].id)).outcome == "already"
    assert len(heard) == 180
