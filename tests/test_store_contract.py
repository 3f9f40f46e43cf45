"""The store contract, core: the same tests on SQLite and PostgreSQL (`store_backends.store`).

Seqs, idempotency claims, group commit, listeners in commit order, meta, a closed store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from diagnoxix.models import Notification, NotificationDraft
from diagnoxix.store.protocols import IdempotencyClaim, IdempotencyConflict, StoreError


def _draft(user: str = "u1", title: str = "t", **fields: Any) -> NotificationDraft:
    return NotificationDraft(
        user_id=user, type="custom", title=title, message="m", data={"k": 1}, priority="normal", **fields
    )


async def test_concurrent_inserts_take_consecutive_seqs_in_few_commits(store: Any) -> None:
    heard: list[int] = []
    store.add_commit_listener(lambda notes: heard.extend(n.seq for n in notes))
    results = await asyncio.gather(*(store.insert_notifications([_draft(title=f"n{i}")]) for i in range(300)))
    seqs = [notes[0].seq for notes in results]
    assert seqs == list(range(1, 301))
    # Listeners hear every commit once, in seq order, before any sender is answered.
    assert heard == seqs
    assert await store.last_seq() == 300
    counts = await store.counts()
    assert counts.stored == 300
    assert counts.commits < 100, counts


async def test_a_multi_draft_insert_is_one_run_of_seqs(store: Any) -> None:
    (first,) = await store.insert_notifications([_draft()])
    notes = await store.insert_notifications([_draft("u1", "a"), _draft("u2", "b"), _draft("u3", "c")])
    assert [n.seq for n in notes] == [first.seq + 1, first.seq + 2, first.seq + 3]
    assert [n.user_id for n in notes] == ["u1", "u2", "u3"]
    assert all(isinstance(n, Notification) and n.id for n in notes)


async def test_an_idempotency_key_is_claimed_once(store: Any) -> None:
    claim = IdempotencyClaim("key1", "k-1", "hash", 201)
    results = await asyncio.gather(
        *(store.insert_notifications([_draft()], claim) for _ in range(5)), return_exceptions=True
    )
    stored = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(stored) == 1
    assert len(refused) == 4
    # Another key of the same caller is its own.
    assert await store.insert_notifications([_draft()], IdempotencyClaim("key1", "k-2", "hash", 201))


async def test_meta_is_created_once_and_the_store_is_writable(store: Any) -> None:
    first = await store.get_or_create_meta("thing", lambda: "one")
    assert first == "one"
    assert await store.get_or_create_meta("thing", lambda: "two") == "one"
    assert len(store.epoch) == 32
    await store.check()
    await store.check_writable()


async def test_a_listener_that_raises_does_not_stop_the_others(store: Any) -> None:
    heard: list[str] = []

    def broken(_notes: list[Notification]) -> None:
        raise RuntimeError("listener bug")

    store.add_commit_listener(broken)
    store.add_commit_listener(lambda notes: heard.extend(n.id for n in notes))
    (note,) = await store.insert_notifications([_draft()])
    assert heard == [note.id]


async def test_writes_after_close_are_refused(store: Any) -> None:
    await store.close()
    with pytest.raises(StoreError):
        await store.insert_notifications([_draft()])
