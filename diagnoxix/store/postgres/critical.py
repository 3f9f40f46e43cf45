"""Critical results on PostgreSQL (`CriticalStore`): items, copies, timeline (groups: `groups`).

A mixin of `PgStore`, the twin of `store.sqlite.critical`. An item's sends are timers; a trigger
of the critical migration records the copies a send stored, with one event each, in that send's
transaction, whichever process ran it.

Across processes the database decides what must happen once:
- acknowledging closes the item with `UPDATE ... WHERE state = 'open' RETURNING`: of two
  processes acknowledging at once, the second (its row lock waits for the first's commit; its
  write takes seqs, so the seq lock orders it after the first anyway) finds the item closed and
  changes nothing (`already`). The winner, in the same transaction, takes each pending step's
  claim (as a cancellation does), cancels the steps, appends the event and gives each live copy
  an `acknowledged` correction with a seq of its own, committed and published in seq order with
  every other process's notifications and corrections;
- a step's or a scheduled send's claim is an `INSERT ... ON CONFLICT DO NOTHING` on the claims'
  primary key, so a job runs, is cancelled or opens its item once;
- an item id is its primary key: a retry of the same open in another process stores nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from diagnoxix.json_encoding import encode_json
from diagnoxix.models import format_timestamp, parse_timestamp
from diagnoxix.store.correction_records import Correction
from diagnoxix.store.critical_records import (
    Acknowledgement,
    AcknowledgeResult,
    CriticalCopy,
    CriticalEvent,
    CriticalItem,
    CriticalItemExists,
    NewCriticalItem,
    critical_owner,
)
from diagnoxix.store.postgres.access import WriteTx
from diagnoxix.store.postgres.groups import GroupQueries
from diagnoxix.store.protocols import IdempotencyConflict
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer

_ITEM = (
    "id, owner, target, type, priority, requires_ack, policy, state, created_at, request_hash,"
    " acknowledged_at, acknowledged_by, acknowledged_via, device, on_behalf,"
    " (SELECT min(due_at COLLATE \"C\") FROM timers WHERE owner = 'critical:' || critical_items.id"
    " AND state = 'pending')"
)
# Text in byte order, as SQLite orders it, whatever the database's collation (the indexes' order).
_NEWEST_FIRST = 'created_at COLLATE "C" DESC, id COLLATE "C" DESC'
_EVENT_COLUMNS = "item_id, at, event, step, channel, user_id, actor, details"
_INSERT_EVENTS = (
    f"INSERT INTO critical_events ({_EVENT_COLUMNS}) SELECT e.item_id, e.at, e.event, e.step, e.channel,"
    " e.user_id, e.actor, e.details FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[],"
    " $5::text[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY"
    " AS e(item_id, at, event, step, channel, user_id, actor, details, ord) ORDER BY e.ord"
)
# A job's claim (status 201, no notification: the jobs' trigger marks it done), once.
_CLAIM_JOB = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status, created_at)"
    f" VALUES ('{TIMER_CLAIMS}', $1, '', '[]', 201, $2) ON CONFLICT DO NOTHING RETURNING 1"
)
_INSERT_ITEM = (
    "INSERT INTO critical_items (id, owner, target, type, priority, requires_ack, policy, state,"
    " created_at, request_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " ON CONFLICT (id) DO NOTHING RETURNING 1"
)
_INSERT_SENDS = (
    "INSERT INTO timers (id, kind, owner, key, due_at, payload, created_at)"
    " SELECT t.id, t.kind, t.owner, t.key, t.due_at, t.payload, $7 FROM unnest($1::text[], $2::text[],"
    " $3::text[], $4::text[], $5::text[], $6::text[]) AS t(id, kind, owner, key, due_at, payload)"
)
_LIVE_COPIES = (
    "SELECT n.id, n.user_id, n.seq FROM critical_copies AS c JOIN notifications AS n"
    " ON n.id = c.notification_id AND (n.expires_at IS NULL OR n.expires_at > $1)"
    " WHERE c.item_id = $2 ORDER BY n.seq"
)
_INSERT_ACKNOWLEDGED = (
    "INSERT INTO corrections (seq, id, notification_id, user_id, notification_seq, kind, at, details)"
    " SELECT $1::bigint + c.ord - 1, $2 || '.' || c.seq, c.id, c.user_id, c.seq, 'acknowledged', $3, $4"
    " FROM unnest($5::text[], $6::text[], $7::bigint[]) WITH ORDINALITY AS c(id, user_id, seq, ord)"
    " ORDER BY c.ord RETURNING seq, id, notification_id, user_id, kind, at, details"
)


def _stamp(value: Any) -> Any:
    return parse_timestamp(str(value)) if value else None


def _item(row: Any) -> CriticalItem:
    return CriticalItem(
        id=row[0],
        owner=row[1],
        target=row[2],
        type=row[3],
        priority=row[4],
        requires_ack=bool(row[5]),
        policy=row[6],
        state=row[7],
        created_at=parse_timestamp(row[8]),
        request_hash=row[9],
        acknowledged_at=_stamp(row[10]),
        acknowledged_by=row[11],
        acknowledged_via=row[12],
        device=row[13],
        on_behalf=bool(row[14]),
        next_step_at=_stamp(row[15]),
    )


async def _insert_events(conn: Any, events: Sequence[CriticalEvent], stamp: str) -> None:
    if not events:
        return
    await conn.execute(
        _INSERT_EVENTS,
        [e.item_id for e in events],
        [format_timestamp(e.at) if e.at else stamp for e in events],
        [e.event for e in events],
        [e.step for e in events],
        [e.channel for e in events],
        [e.user_id for e in events],
        [e.actor for e in events],
        [encode_json(e.details) for e in events],
    )


def _acknowledged(row: Any) -> Correction:
    seq, cid, nid, user_id, _kind, at, details = row
    return Correction(
        seq=int(seq),
        id=str(cid),
        notification_id=str(nid),
        user_id=str(user_id),
        kind="acknowledged",
        at=parse_timestamp(str(at)),
        details=json.loads(details) if details else {},
    )


class _Refused(Exception):
    """Inside `open_critical`'s savepoint: undo what it wrote, and say why."""

    def __init__(self, why: Literal["claimed", "exists"]) -> None:
        super().__init__(why)
        self.why = why


class CriticalQueries(GroupQueries):
    """`CriticalStore` on PostgreSQL."""

    if TYPE_CHECKING:  # `PgCore` has it; a definition here would hide that one

        def _corrected(self, correction: Correction) -> None: ...

    # -- items -------------------------------------------------------------------------------

    async def open_critical(
        self, item: NewCriticalItem, sends: Sequence[NewTimer], *, claim_timer: str | None = None
    ) -> CriticalItem:
        stamp = self._now_stamp()
        ids = [f"{item.id}.{i}" for i in range(len(sends))]
        opened = CriticalEvent(
            item.id,
            "opened",
            actor=item.owner,
            details={"target": item.target, "policy": item.policy, "requires_ack": item.requires_ack},
        )
        state = "open" if item.requires_ack else "sent"
        timers = (
            ids,
            [t.kind for t in sends],
            [t.owner for t in sends],
            [t.key for t in sends],
            [format_timestamp(t.due_at) for t in sends],
            [encode_json(t.payload) for t in sends],
        )
        named = encode_json({"critical_id": item.id})

        async def open_item(tx: WriteTx) -> Any:
            conn = tx.conn
            try:
                # A savepoint: a refused open leaves nothing behind, and the batch goes on.
                async with conn.transaction():
                    # A scheduled send's job is done with the item it opens, and names it.
                    if claim_timer is not None:
                        if not await conn.fetchval(_CLAIM_JOB, claim_timer, stamp):
                            raise _Refused("claimed")
                        await conn.execute(
                            "UPDATE timers SET payload = json_text_set(payload, $1::json) WHERE id = $2",
                            named,
                            claim_timer,
                        )
                    inserted = await conn.fetchval(
                        _INSERT_ITEM,
                        item.id,
                        item.owner,
                        item.target,
                        item.type,
                        item.priority,
                        int(item.requires_ack),
                        item.policy,
                        state,
                        stamp,
                        item.request_hash,
                    )
                    if not inserted:
                        raise _Refused("exists")
                    await _insert_events(conn, [opened], stamp)
                    if sends:
                        await conn.execute(_INSERT_SENDS, *timers, stamp)
            except _Refused as refused:
                return refused.why
            return await conn.fetchrow(f"SELECT {_ITEM} FROM critical_items WHERE id = $1", item.id)

        found = await self._write(open_item)
        if found == "claimed":
            raise IdempotencyConflict("this job was run or cancelled already")
        if found == "exists":
            raise CriticalItemExists(item.id)
        return _item(found)

    async def critical_item(self, item_id: str) -> CriticalItem | None:
        row = await self._fetchrow(f"SELECT {_ITEM} FROM critical_items WHERE id = $1", item_id)
        return _item(row) if row is not None else None

    async def critical_item_of(self, notification_id: str) -> CriticalItem | None:
        row = await self._fetchrow(
            f"SELECT {_ITEM} FROM critical_items WHERE id ="
            " (SELECT item_id FROM critical_copies WHERE notification_id = $1)",
            notification_id,
        )
        return _item(row) if row is not None else None

    async def critical_copies(self, item_id: str) -> list[CriticalCopy]:
        rows = await self._fetch(
            "SELECT c.notification_id, c.user_id, c.step, n.delivered_at, n.read_at FROM critical_copies AS c"
            " JOIN notifications AS n ON n.id = c.notification_id"
            " AND (n.expires_at IS NULL OR n.expires_at > $1)"
            " WHERE c.item_id = $2 ORDER BY n.seq",
            self._now_stamp(),
            item_id,
        )
        return [CriticalCopy(r[0], r[1], int(r[2]), _stamp(r[3]), _stamp(r[4])) for r in rows]

    async def critical_items(self, *, open_only: bool, limit: int) -> list[CriticalItem]:
        where = "WHERE state = 'open'" if open_only else ""
        rows = await self._fetch(
            f"SELECT {_ITEM} FROM critical_items {where} ORDER BY {_NEWEST_FIRST} LIMIT $1", limit
        )
        return [_item(r) for r in rows]

    async def critical_timeline(self, item_id: str) -> list[CriticalEvent]:
        rows = await self._fetch(
            f"SELECT {_EVENT_COLUMNS} FROM critical_events WHERE item_id = $1 ORDER BY id", item_id
        )
        return [
            CriticalEvent(
                r[0],
                r[2],
                at=parse_timestamp(r[1]),
                step=r[3],
                channel=r[4],
                user_id=r[5],
                actor=r[6],
                details=json.loads(r[7]),
            )
            for r in rows
        ]

    def record_critical_events(self, events: Sequence[CriticalEvent]) -> None:
        stamp = self._now_stamp()
        recorded = list(events)

        async def record(tx: WriteTx) -> None:
            await _insert_events(tx.conn, recorded, stamp)

        self._write_nowait(record)

    async def finish_critical_step(self, timer_id: str, events: Sequence[CriticalEvent]) -> None:
        stamp = self._now_stamp()
        recorded = list(events)

        async def finish(tx: WriteTx) -> bool:
            if not await tx.conn.fetchval(_CLAIM_JOB, timer_id, stamp):
                return False
            await _insert_events(tx.conn, recorded, stamp)
            return True

        if not await self._write(finish):
            raise IdempotencyConflict("this step ran or was cancelled already")

    async def acknowledge_critical(self, item_id: str, ack: Acknowledgement) -> AcknowledgeResult:
        stamp = self._now_stamp()
        ack_id = uuid.uuid4().hex
        owner = critical_owner(item_id)
        details = {"via": ack.via, "on_behalf": ack.on_behalf}
        if ack.reason is not None:
            details["reason"] = ack.reason
        event = CriticalEvent(
            item_id,
            "acknowledged_on_behalf" if ack.on_behalf else "acknowledged",
            user_id=None if ack.on_behalf else ack.by,
            actor=ack.by,
            details=details | ({"device": ack.device} if ack.device else {}),
        )
        correction = encode_json({"critical_id": item_id, "by": ack.by, "on_behalf": ack.on_behalf})

        async def acknowledge(tx: WriteTx) -> tuple[Any, list[Correction] | None]:
            conn = tx.conn
            # First wins: a second acknowledgement (in this process or another, after this one's
            # commit) finds the item closed and changes nothing.
            won = await conn.fetchval(
                "UPDATE critical_items SET state = 'acknowledged', acknowledged_at = $1,"
                " acknowledged_by = $2, acknowledged_via = $3, device = $4, on_behalf = $5, ack_id = $6"
                " WHERE id = $7 AND state = 'open' RETURNING 1",
                stamp,
                ack.by,
                ack.via,
                ack.device,
                int(ack.on_behalf),
                ack_id,
                item_id,
            )
            made: list[Correction] | None = None
            if won:
                made = await self._close(tx, item_id, owner, event, ack_id, correction, stamp)
            row = await conn.fetchrow(f"SELECT {_ITEM} FROM critical_items WHERE id = $1", item_id)
            return row, made

        row, made = await self._write(acknowledge, sequenced=True)
        if row is None:
            return AcknowledgeResult("not_found")
        if made is None:
            return AcknowledgeResult("already", _item(row))
        return AcknowledgeResult("done", _item(row), tuple(made))

    async def _close(
        self,
        tx: WriteTx,
        item_id: str,
        owner: str,
        event: CriticalEvent,
        ack_id: str,
        correction: str,
        stamp: str,
    ) -> list[Correction]:
        """The rest of an acknowledgement that won: in its transaction."""
        conn = tx.conn
        await _insert_events(conn, [event], stamp)
        # The rest of the chain never runs: each pending step's claim is taken, as a cancellation
        # takes it (`cancel_timer`), then the step is marked cancelled.
        await conn.execute(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
            f" created_at) SELECT '{TIMER_CLAIMS}', id, '', '[]', 0, $1 FROM timers"
            " WHERE owner = $2 AND state = 'pending' ON CONFLICT DO NOTHING",
            stamp,
            owner,
        )
        await conn.execute(
            "UPDATE timers SET state = 'cancelled', finished_at = $1,"
            " payload = json_text_without(payload, 'content') WHERE owner = $2 AND state = 'pending'",
            stamp,
            owner,
        )
        # One `acknowledged` event per live copy, each a seq of its own past every seq handed out
        # so far, in the copies' order. No copy can be added meanwhile: a send takes seqs too, and
        # sequenced writes of every process commit one after another.
        copies = await conn.fetch(_LIVE_COPIES, stamp, item_id)
        if not copies:
            return []
        rows = await conn.fetch(
            _INSERT_ACKNOWLEDGED,
            tx.take_seqs(len(copies)),
            ack_id,
            stamp,
            correction,
            [c[0] for c in copies],
            [c[1] for c in copies],
            [c[2] for c in copies],
        )
        made = sorted((_acknowledged(r) for r in rows), key=lambda fix: fix.seq)

        def committed() -> None:
            # Right after the commit, in commit order with every notification: each copy's
            # `acknowledged` event is published in its seq's place.
            for fix in made:
                self._corrected(fix)

        tx.after_commit(committed)
        return made
