"""What only the PostgreSQL store can get wrong in reads, marks and corrections: several
processes on one database. Two `PgStore`s on one database are two processes: each has its own
writer, pool and listeners, and only the database is shared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from diagnoxix.models import Notification, NotificationDraft
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.protocols import Correction

from .pg_server import PgCluster

USER = "patient-1"
NO_BOUND = 2**62


def _draft(user: str = USER, title: str = "t") -> NotificationDraft:
    return NotificationDraft(
        user_id=user, type="custom", title=title, message="m", data={}, priority="normal"
    )


@pytest.fixture
async def two(pg_cluster: PgCluster) -> AsyncIterator[tuple[PgStore, PgStore]]:
    """Two stores on one fresh database, as two processes of one deployment would be."""
    name = pg_cluster.create_database()
    first, second = PgStore(pg_cluster.dsn(name)), PgStore(pg_cluster.dsn(name))
    try:
        await first.open()
        await second.open()
        yield first, second
    finally:
        await first.close()
        await second.close()
        pg_cluster.drop_database(name)


class Heard:
    """What one store's listeners heard: every seq of its commits and corrections, and marks."""

    def __init__(self, store: PgStore) -> None:
        self.seqs: list[int] = []
        self.marks: dict[str, int] = {"acknowledged": 0, "read": 0}
        store.add_commit_listener(self._notes)
        store.add_correction_listener(self._fix)
        store.add_mark_listener(self._marked)

    def _notes(self, notes: Any) -> None:
        self.seqs.extend(n.seq for n in notes)

    def _fix(self, fix: Correction) -> None:
        self.seqs.append(fix.seq)

    def _marked(self, kind: str, counts: Mapping[tuple[str, str], int]) -> None:
        self.marks[kind] += sum(counts.values())


async def test_two_processes_inserting_and_correcting_keep_one_gapless_ordered_stream(
    two: tuple[PgStore, PgStore],
) -> None:
    """Both insert, retract and update at once. Every seq is handed out once, and none is lost;
    each process hears its own commits in strictly increasing seq order; and a reader resuming
    from its cursor (as a client does, through either process) never sees seq n+1 before n: it
    reads up to the committed watermark, and nothing ever commits below that afterwards."""
    first, second = two
    heard = (Heard(first), Heard(second))
    targets = [
        *await first.insert_notifications([_draft(title=f"old a{i}") for i in range(30)]),
        *await second.insert_notifications([_draft(title=f"old b{i}") for i in range(30)]),
    ]
    done = asyncio.Event()

    async def send(store: PgStore, stream: int) -> None:
        for i in range(20):
            await store.insert_notifications([_draft(title=f"new {stream}.{i}"), _draft("someone-else")])

    async def correct(store: PgStore, notes: list[Notification]) -> None:
        for i, note in enumerate(notes):
            if i % 2:
                await store.retract_notification(note.id)
            else:
                await store.update_notification(note.id, title=f"fixed {i}", message=None)

    seen: set[int] = set()
    reads = 0

    async def resume(store: PgStore) -> None:
        """A client's cursor moving forward by the watermark, as `delivery.resume` reads."""
        nonlocal reads
        cursor = 0
        while True:
            finished = done.is_set()
            watermark = await store.last_seq()
            notes = await store.notifications_for(USER, after_seq=cursor, upto_seq=watermark, limit=10_000)
            fixes = await store.corrections_for(USER, after_seq=cursor, upto_seq=watermark, limit=10_000)
            seen.update(n.seq for n in notes)
            seen.update(f.seq for f in fixes)
            cursor, reads = watermark, reads + 1
            if finished:
                return
            await asyncio.sleep(0)

    readers = [asyncio.create_task(resume(store)) for store in (first, second)]
    # Each process corrects notifications of both, and the two race for the same ones too.
    await asyncio.gather(
        *(send(store, stream) for stream in range(3) for store in (first, second)),
        correct(first, targets[::2]),
        correct(second, targets[1::2]),
        correct(second, targets[::4]),
    )
    done.set()
    await asyncio.gather(*readers)
    assert reads > 10

    last = await first.last_seq()
    assert last == await second.last_seq()
    everything = heard[0].seqs + heard[1].seqs
    # Unique, and without a gap: nothing that found nothing to correct took a seq.
    assert sorted(everything) == list(range(1, last + 1))
    for one in heard:
        assert one.seqs == sorted(one.seqs), "a process heard its commits out of seq order"
    # Every event of the user's stream that is still there was seen by both cursors' reads.
    stream = {
        n.seq for n in await first.notifications_for(USER, after_seq=0, upto_seq=NO_BOUND, limit=10_000)
    }
    stream |= {f.seq for f in await first.corrections_for(USER, after_seq=0, upto_seq=NO_BOUND, limit=10_000)}
    assert stream - seen == set(), "a reader's cursor passed a seq before it was visible"


async def test_two_processes_racing_to_retract_make_one_retraction(two: tuple[PgStore, PgStore]) -> None:
    first, second = two
    heard = (Heard(first), Heard(second))
    notes = await first.insert_notifications([_draft(title=f"n{i}") for i in range(20)])
    results = await asyncio.gather(
        *(store.retract_notification(note.id) for note in notes for store in (first, second, first))
    )
    for i, note in enumerate(notes):
        outcomes = results[3 * i : 3 * i + 3]
        assert sorted(r.outcome for r in outcomes) == ["already", "already", "done"], note.id
        assert all(r.correction == outcomes[0].correction for r in outcomes)
        assert sum(r.was_unread for r in outcomes) == 1
    retractions = await second.corrections_for(USER, after_seq=0, upto_seq=NO_BOUND, limit=100)
    assert sorted(f.notification_id for f in retractions) == sorted(n.id for n in notes)
    assert len(heard[0].seqs) + len(heard[1].seqs) == 40


async def test_marks_racing_on_two_processes_count_each_change_once(two: tuple[PgStore, PgStore]) -> None:
    """Two devices of one user, each on its own process, acknowledging and reading the same
    notifications at once: each notification changes state once, and is counted once."""
    first, second = two
    heard = (Heard(first), Heard(second))
    acked = await first.insert_notifications([_draft(title=f"a{i}") for i in range(40)])
    read = await first.insert_notifications([_draft(title=f"r{i}") for i in range(40)])
    everything = await first.insert_notifications([_draft(title=f"e{i}") for i in range(40)])
    ids = [n.id for n in acked]
    answers = await asyncio.gather(
        *(store.acknowledge(USER, ids[i : i + 5]) for i in range(0, 40, 5) for store in (first, second))
    )
    assert sorted(nid for answer in answers for nid in answer) == sorted(ids * 2)
    assert heard[0].marks["acknowledged"] + heard[1].marks["acknowledged"] == 40

    ids = [n.id for n in read]
    await asyncio.gather(
        *(store.mark_read(USER, ids[i : i + 5]) for i in range(0, 40, 5) for store in (first, second))
    )
    assert heard[0].marks["read"] + heard[1].marks["read"] == 40
    # Acknowledged is not read: those stay unread with the rest.
    assert await first.unread_count(USER) == len(acked) + len(everything)

    marked = await asyncio.gather(*(store.mark_all_read(USER) for store in (first, second, first, second)))
    assert sum(marked) == len(acked) + len(everything)
    assert heard[0].marks["read"] + heard[1].marks["read"] == 120
    assert await second.unread_count(USER) == 0


async def test_read_all_covers_what_another_process_committed(two: tuple[PgStore, PgStore]) -> None:
    """A device may have seen a notification another process stored (through the broker):
    reading all marks it too, though this process never heard of its commit."""
    first, second = two
    await first.insert_notifications([_draft(title="from the first")])
    (other,) = await second.insert_notifications([_draft(title="from the second")])
    assert await first.mark_all_read(USER) == 2
    (again,) = await first.get_notifications([other.id])
    assert again.read_at is not None
