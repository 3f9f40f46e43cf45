"""Notifications' insert on PostgreSQL (`insert_notifications`): staged, then run together with
the batch's other inserts in one transaction, as `store.sqlite.batch` does them.

A mixin of `PgStore`, kept apart so each module holds one concern. Each insert is a sequenced
write (`writer`): its seqs are taken under the seq lock, and the writer runs a batch's inserts
together (`run_together`). An Idempotency-Key already used refuses its insert alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from diagnoxix.models import Notification, NotificationDraft, format_timestamp
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.protocols import IdempotencyClaim, IdempotencyConflict, StoreError
from diagnoxix.store.staging import InsertRows, Staged, Stager, committed_notes

log = logging.getLogger("diagnoxix.store")

_CLAIM_TAKEN = "SELECT 1 FROM idempotency_keys WHERE api_key_id = $1 AND key = $2"
# Each column as an array: PostgreSQL reads arrays for a fraction of what parsing one JSON document
# costs it (database CPU per row: 18-19 µs against 31-33 µs with `json_array_elements`).
_INSERT_NOTIFICATIONS = (
    "INSERT INTO notifications (seq, id, user_id, type, title, message, data, priority, created_at,"
    " expires_at, links) SELECT $1::bigint + t.ord - 1, t.id, t.user_id, t.type, t.title, t.message,"
    " t.data, t.priority, $2, t.expires_at, t.links FROM unnest($3::text[], $4::text[], $5::text[],"
    " $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY"
    " AS t(id, user_id, type, title, message, data, priority, expires_at, links, ord)"
)


class PgInserts(PgAccess):
    """Notifications' insert (`NotificationStore.insert_notifications`) on the store's primitives."""

    if TYPE_CHECKING:  # `PgCore` implements it; a definition here would hide it

        def _committed(self, notifications: list[Notification]) -> None:
            """Every commit listener hears of the notifications committed."""

    async def insert_notifications(
        self,
        drafts: Sequence[NotificationDraft],
        idempotency: IdempotencyClaim | None = None,
        *,
        lifetimes: Mapping[str, int] | None = None,
    ) -> list[Notification]:
        now = self._clock.now()
        # Stored with milliseconds: the notifications returned must equal those read back.
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        stamp = format_timestamp(now)
        try:
            # No seq guessed: several processes take seqs, and inserts run together in one batch.
            staged, rows = Stager(now, stamp, len(drafts), json_rows=False).stage(
                drafts, idempotency, lifetimes or {}, None
            )
        except Exception as exc:  # validated drafts never get here (NaN, an unknown priority)
            log.error("store.stage_failed", extra={"error": type(exc).__name__})
            raise StoreError("the notification could not be encoded for storage") from None
        try:
            insert = _Insert(self._insert_together, staged, rows, now, stamp)
            notes = await self._write(insert, sequenced=True)
        except StoreError:
            # Another process inserted the same claim between this write's check and its insert
            # (a retry racing the request, a job's run racing its cancel): its unique key refused.
            if rows.claim is not None and await self._fetchval(_CLAIM_TAKEN, *rows.claim[:2]):
                raise IdempotencyConflict("this Idempotency-Key was already used") from None
            raise
        if notes is None:
            raise IdempotencyConflict("this Idempotency-Key was already used")
        return notes

    async def _insert_together(self, tx: WriteTx, inserts: list[_Insert]) -> list[list[Notification] | None]:
        """Every insert of a batch in three statements: which Idempotency-Keys are taken, the
        rows, the claims. Each insert's notifications: None where its key was taken."""
        conn = tx.conn
        claims = [i.rows.claim for i in inserts if i.rows.claim is not None]
        taken: set[tuple[str, str]] = set()
        if claims:
            found = await conn.fetch(
                "SELECT api_key_id, key FROM idempotency_keys WHERE (api_key_id, key) IN"
                " (SELECT * FROM unnest($1::text[], $2::text[]))",
                [c[0] for c in claims],
                [c[1] for c in claims],
            )
            taken = {(r[0], r[1]) for r in found}
        accepted: list[_Insert] = []
        outcomes: list[list[Notification] | None] = []
        for insert in inserts:
            claim = insert.rows.claim
            if claim is not None:
                if (claim[0], claim[1]) in taken:
                    outcomes.append(None)
                    continue
                taken.add((claim[0], claim[1]))  # the first of a batch wins, as across batches
            accepted.append(insert)
            outcomes.append([])
        count = sum(i.rows.count for i in accepted)
        first = tx.take_seqs(count)
        # One statement per run of inserts staged in the same millisecond (their created_at).
        seq, run_first = first, first
        run: list[_Insert] = []
        for pending in [*accepted, None]:
            if run and (pending is None or pending.stamp != run[0].stamp):
                await conn.execute(_INSERT_NOTIFICATIONS, run_first, run[0].stamp, *_columns(run))
                run = []
            if pending is not None and pending.rows.count:
                if not run:
                    run_first = seq
                run.append(pending)
                seq += pending.rows.count
        claimed = [(i.rows.claim, i.rows.ids_json, i.stamp) for i in accepted if i.rows.claim is not None]
        if claimed:
            await conn.execute(
                "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
                " created_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                " $5::int[], $6::text[])",
                [c[0][0] for c in claimed],
                [c[0][1] for c in claimed],
                [c[0][2] for c in claimed],
                [c[1] for c in claimed],
                [c[0][3] for c in claimed],
                [c[2] for c in claimed],
            )
        committed: list[Notification] = []
        seq = first
        index = 0
        for position, outcome in enumerate(outcomes):
            if outcome is None:
                continue
            insert = accepted[index]
            index += 1
            notes = committed_notes(insert.staged, seq, insert.now, insert.stamp)
            seq += insert.rows.count
            outcomes[position] = notes
            committed.extend(notes)
        if committed:
            tx.after_commit(lambda: self._committed(committed))
        return outcomes


@dataclass(slots=True)
class _Insert:
    """One `insert_notifications` call as a write: alone, or run together with the batch's others."""

    run_together: Callable[[WriteTx, list[_Insert]], Awaitable[list[list[Notification] | None]]]
    staged: Staged
    rows: InsertRows
    now: datetime
    stamp: str

    async def __call__(self, tx: WriteTx) -> list[Notification] | None:
        return (await self.run_together(tx, [self]))[0]


def _columns(inserts: list[_Insert]) -> tuple[list[str | None], ...]:
    """The rows of `inserts`, column by column, in `_INSERT_NOTIFICATIONS`'s order."""
    staged = [i.staged for i in inserts]
    drafts = [d for s in staged for d in s.drafts]
    return (
        [nid for s in staged for nid in s.ids],
        [d.user_id for d in drafts],
        [d.type for d in drafts],
        [d.title for d in drafts],
        [d.message for d in drafts],
        [data for s in staged for data in s.data_json],
        [d.priority for d in drafts],
        [expires[1] for s in staged for expires in s.expires],
        [d.links.stored_json() if d.links is not None else None for d in drafts],
    )
