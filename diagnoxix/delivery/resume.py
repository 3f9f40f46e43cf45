"""Resuming a connection: what a cursor can be trusted for, and the paged replay of the backlog.

A connection registers with the hub before its replay, and the replay stops at the hub's
watermark: everything after it arrives live. So the switch has neither gap nor duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from diagnoxix.delivery import frames
from diagnoxix.delivery.connection import Connection
from diagnoxix.store.protocols import CorrectionStore, NotificationStore

# Replay reads the backlog in pages so a long absence never builds one huge query or frame.
REPLAY_PAGE = 200


class Store(NotificationStore, CorrectionStore, Protocol):
    """What a replay reads: notifications and their corrections."""


@dataclass(frozen=True, slots=True)
class ResumePlan:
    after_seq: int
    # No usable cursor: send what this user was never delivered (the offline queue).
    undelivered_only: bool
    recovered: bool
    reason: str | None = None


async def plan_resume(
    user_id: str, since: int | None, epoch: str | None, store: NotificationStore, watermark: int
) -> ResumePlan:
    """Decide how to honour a client's cursor; `recovered=False` says why it could not be."""
    if since is None:
        return ResumePlan(0, undelivered_only=True, recovered=True)
    if epoch is not None and epoch != store.epoch:
        # The database was replaced: the client's seqs mean nothing here any more.
        return ResumePlan(0, undelivered_only=True, recovered=False, reason="epoch_changed")
    if store.undone_by_restore(since):
        # The database was restored from a backup older than the cursor: its seq named a
        # notification that is gone, and new ones never reuse it (store.sqlite.restores).
        return ResumePlan(0, undelivered_only=True, recovered=False, reason="store_restored")
    if since > watermark:
        return ResumePlan(0, undelivered_only=True, recovered=False, reason="cursor_ahead")
    if since < await store.purged_through(user_id):
        # Something after the cursor may have been purged; send what is left and say so.
        return ResumePlan(since, undelivered_only=False, recovered=False, reason="expired")
    return ResumePlan(since, undelivered_only=False, recovered=True)


async def replay(conn: Connection, store: Store, plan: ResumePlan, watermark: int) -> int:
    """Send the backlog in seq order up to the watermark; returns how many frames were sent.

    A plain client cannot acknowledge, so what is written to it counts as delivered; a v1
    client's notifications stay undelivered until it acks them. A v1 client with a cursor also
    gets the corrections after it (`retracted`, `updated`), in seq order among the notifications:
    they are events of its stream. Without a cursor it holds nothing to correct.
    """
    after = plan.after_seq
    corrections = conn.v1 and not plan.undelivered_only
    sent = 0
    while True:
        page = await store.notifications_for(
            conn.user_id,
            after_seq=after,
            upto_seq=watermark,
            limit=REPLAY_PAGE,
            undelivered_only=plan.undelivered_only,
        )
        # Up to where this page (and the corrections' page) covers the stream.
        upto = page[-1].seq if len(page) == REPLAY_PAGE else watermark
        fixes = (
            await store.corrections_for(conn.user_id, after_seq=after, upto_seq=upto, limit=REPLAY_PAGE)
            if corrections
            else []
        )
        if len(fixes) == REPLAY_PAGE:
            upto = fixes[-1].seq
        events = sorted(
            [(n.seq, n.encode_frame()) for n in page if n.seq <= upto]
            + [(f.seq, frame) for f in fixes if (frame := frames.correction(f)) is not None],
            key=lambda event: event[0],
        )
        for _, text in events:
            await conn.send_direct(text)
        if not conn.v1:
            user_id = conn.user_id
            store.record_deliveries(
                [(note.id, user_id) for note in page if not note.is_broadcast],
                [(note.id, user_id) for note in page if note.is_broadcast],
            )
        sent += len(events)
        if upto >= watermark:
            return sent
        after = upto
