"""Critical results in the embedded store (`CriticalStore`): groups, items, copies, timeline.

A mixin of `SqliteStore`. An item's sends are timers (a trigger of the critical results'
migration records the copies a send stored, with one event each, in that send's transaction).
Acknowledging is one transaction: the item is closed (once: the first acknowledgement wins), its
pending steps are cancelled (their claims taken, as `cancel_timer` does), the event is appended,
and each live copy gets an `acknowledged` correction whose seq comes after every seq handed out
before it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from diagnoxix.json_encoding import encode_json, encode_rows
from diagnoxix.models import format_timestamp, parse_timestamp
from diagnoxix.store.correction_records import Correction
from diagnoxix.store.critical_records import (
    Acknowledgement,
    AcknowledgeResult,
    CriticalCopy,
    CriticalEvent,
    CriticalItem,
    CriticalItemExists,
    Group,
    GroupMember,
    NewCriticalItem,
    critical_owner,
)
from diagnoxix.store.protocols import IdempotencyConflict, StoreError
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.restores import highest_seq_sql
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer

_ITEM = (
    "id, owner, target, type, priority, requires_ack, policy, state, created_at, request_hash,"
    " acknowledged_at, acknowledged_by, acknowledged_via, device, on_behalf,"
    " (SELECT min(due_at) FROM timers WHERE owner = 'critical:' || critical_items.id AND state = 'pending')"
)
_EVENT_COLUMNS = "item_id, at, event, step, channel, user_id, actor, details"
_INSERT_EVENTS = (
    f"INSERT INTO critical_events ({_EVENT_COLUMNS}) SELECT value->>0, value->>1, value->>2, value->>3,"
    " value->>4, value->>5, value->>6, value->>7 FROM json_each(?)"
)
_CORRECTION_COLUMNS = "c.seq, c.id, c.notification_id, c.user_id, c.kind, c.at, c.details"


def _stamp(value: Any) -> Any:
    return parse_timestamp(str(value)) if value else None


def _item(row: tuple[Any, ...]) -> CriticalItem:
    (iid, owner, target, kind, priority, requires_ack, policy, state, created, request_hash) = row[:10]
    at, by, via, device, on_behalf, next_step = row[10:16]
    return CriticalItem(
        id=iid,
        owner=owner,
        target=target,
        type=kind,
        priority=priority,
        requires_ack=bool(requires_ack),
        policy=policy,
        state=state,
        created_at=parse_timestamp(created),
        request_hash=request_hash,
        acknowledged_at=_stamp(at),
        acknowledged_by=by,
        acknowledged_via=via,
        device=device,
        on_behalf=bool(on_behalf),
        next_step_at=_stamp(next_step),
    )


def _event_row(event: CriticalEvent, stamp: str) -> list[Any]:
    return [
        event.item_id,
        format_timestamp(event.at) if event.at else stamp,
        event.event,
        event.step,
        event.channel,
        event.user_id,
        event.actor,
        encode_json(event.details),
    ]


def acknowledged_correction(row: tuple[Any, ...]) -> Correction:
    seq, cid, nid, user_id, _kind, at, details = row[:7]
    return Correction(
        seq=int(seq),
        id=str(cid),
        notification_id=str(nid),
        user_id=str(user_id),
        kind="acknowledged",
        at=parse_timestamp(str(at)),
        details=json.loads(details) if details else {},
    )


class CriticalQueries(SqliteAccess):
    """`CriticalStore` on the store's primitives."""

    def _corrected(self, correction: Correction) -> None:
        """A correction committed: its listeners hear of it, in commit order (`SqliteStore`)."""
        raise NotImplementedError

    # -- groups ------------------------------------------------------------------------------

    async def put_group(self, name: str) -> bool:
        changed = await self._execute(
            "INSERT INTO groups (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            [(name, self._now_stamp())],
        )
        return changed > 0

    async def delete_group(self, name: str) -> bool:
        return await self._execute("DELETE FROM groups WHERE name = ?", [(name,)]) > 0

    async def list_groups(self) -> list[Group]:
        rows = await self._read(
            "SELECT g.name, g.created_at, count(m.user_id), coalesce(sum(m.on_duty), 0) FROM groups AS g"
            " LEFT JOIN group_members AS m ON m.group_name = g.name GROUP BY g.name ORDER BY g.name",
            (),
        )
        return [Group(r[0], parse_timestamp(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def group_members(self, name: str) -> list[GroupMember] | None:
        if not await self._read("SELECT 1 FROM groups WHERE name = ?", (name,)):
            return None
        rows = await self._read(
            "SELECT user_id, on_duty, added_at FROM group_members WHERE group_name = ? ORDER BY user_id",
            (name,),
        )
        return [GroupMember(name, r[0], bool(r[1]), parse_timestamp(r[2])) for r in rows]

    async def set_group_member(self, name: str, user_id: str, on_duty: bool) -> bool:
        changed = await self._execute(
            "INSERT INTO group_members (group_name, user_id, on_duty, added_at)"
            " SELECT name, ?, ?, ? FROM groups WHERE name = ?"
            " ON CONFLICT (group_name, user_id) DO UPDATE SET on_duty = excluded.on_duty",
            [(user_id, int(on_duty), self._now_stamp(), name)],
        )
        return changed > 0

    async def remove_group_member(self, name: str, user_id: str) -> bool:
        changed = await self._execute(
            "DELETE FROM group_members WHERE group_name = ? AND user_id = ?", [(name, user_id)]
        )
        return changed > 0

    # -- items -------------------------------------------------------------------------------

    async def open_critical(
        self, item: NewCriticalItem, sends: Sequence[NewTimer], *, claim_timer: str | None = None
    ) -> CriticalItem:
        stamp = self._now_stamp()
        ids = [f"{item.id}.{i}" for i in range(len(sends))]
        timers = [
            [tid, t.kind, t.owner, t.key, format_timestamp(t.due_at), encode_json(t.payload), stamp]
            for tid, t in zip(ids, sends, strict=True)
        ]
        opened = CriticalEvent(
            item.id,
            "opened",
            actor=item.owner,
            details={"target": item.target, "policy": item.policy, "requires_ack": item.requires_ack},
        )
        state = "open" if item.requires_ack else "sent"
        # A scheduled send's job is done with the item it opens (migration 0008's trigger), and
        # names it: one transaction, so a job run twice, or cancelled meanwhile, opens nothing.
        claim: list[tuple[str, list[tuple[Any, ...]]]] = []
        if claim_timer is not None:
            claim = [
                (
                    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids,"
                    " status, created_at) VALUES (?, ?, '', '[]', 201, ?)",
                    [(TIMER_CLAIMS, claim_timer, stamp)],
                ),
                (
                    "UPDATE timers SET payload = json_set(payload, '$.critical_id', ?) WHERE id = ?",
                    [(item.id, claim_timer)],
                ),
            ]
        try:
            await self._execute_all(
                [
                    *claim,
                    (
                        "INSERT INTO critical_items (id, owner, target, type, priority, requires_ack, policy,"
                        " state, created_at, request_hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        [
                            (
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
                        ],
                    ),
                    (_INSERT_EVENTS, [(encode_rows([_event_row(opened, stamp)]),)]),
                    (
                        "INSERT INTO timers (id, kind, owner, key, due_at, payload, created_at) SELECT"
                        " value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6"
                        " FROM json_each(?)",
                        [(encode_rows(timers),)],
                    ),
                ]
            )
        except StoreError:
            if claim_timer is not None and await self._read(
                "SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND key = ?", (TIMER_CLAIMS, claim_timer)
            ):
                raise IdempotencyConflict("this job was run or cancelled already") from None
            if await self._read("SELECT 1 FROM critical_items WHERE id = ?", (item.id,)):
                raise CriticalItemExists(item.id) from None
            raise
        found = await self.critical_item(item.id)
        assert found is not None
        return found

    async def critical_item(self, item_id: str) -> CriticalItem | None:
        rows = await self._read(f"SELECT {_ITEM} FROM critical_items WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    async def critical_item_of(self, notification_id: str) -> CriticalItem | None:
        rows = await self._read(
            f"SELECT {_ITEM} FROM critical_items WHERE id ="
            " (SELECT item_id FROM critical_copies WHERE notification_id = ?)",
            (notification_id,),
        )
        return _item(rows[0]) if rows else None

    async def critical_copies(self, item_id: str) -> list[CriticalCopy]:
        rows = await self._read(
            "SELECT c.notification_id, c.user_id, c.step, n.delivered_at, n.read_at FROM critical_copies AS c"
            " JOIN notifications AS n ON n.id = c.notification_id"
            " AND (n.expires_at IS NULL OR n.expires_at > ?)"
            " WHERE c.item_id = ? ORDER BY n.seq",
            (self._now_stamp(), item_id),
        )
        return [CriticalCopy(r[0], r[1], int(r[2]), _stamp(r[3]), _stamp(r[4])) for r in rows]

    async def critical_items(self, *, open_only: bool, limit: int) -> list[CriticalItem]:
        where = "WHERE state = 'open'" if open_only else ""
        rows = await self._read(
            f"SELECT {_ITEM} FROM critical_items {where} ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
        )
        return [_item(r) for r in rows]

    async def critical_timeline(self, item_id: str) -> list[CriticalEvent]:
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM critical_events WHERE item_id = ? ORDER BY id", (item_id,)
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
        self._execute_nowait(_INSERT_EVENTS, [_event_row(e, stamp) for e in events])

    async def finish_critical_step(self, timer_id: str, events: Sequence[CriticalEvent]) -> None:
        stamp = self._now_stamp()
        statements: list[tuple[str, list[tuple[Any, ...]]]] = [
            # The job's claim (status 201, no notification): migration 0008's trigger marks it done.
            (
                "INSERT INTO idempotency_keys (api_key_id, key, request_hash, notification_ids, status,"
                " created_at) VALUES (?, ?, '', '[]', 201, ?)",
                [(TIMER_CLAIMS, timer_id, stamp)],
            )
        ]
        if events:
            statements.append((_INSERT_EVENTS, [(encode_rows([_event_row(e, stamp) for e in events]),)]))
        try:
            await self._execute_all(statements)
        except StoreError:
            if await self._read(
                "SELECT 1 FROM idempotency_keys WHERE api_key_id = ? AND key = ?", (TIMER_CLAIMS, timer_id)
            ):
                raise IdempotencyConflict("this step ran or was cancelled already") from None
            raise

    async def acknowledge_critical(self, item_id: str, ack: Acknowledgement) -> AcknowledgeResult:
        stamp = self._now_stamp()
        ack_id = uuid.uuid4().hex
        owner = critical_owner(item_id)
        mine = "EXISTS (SELECT 1 FROM critical_items WHERE id = ? AND ack_id = ?)"
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
        made: list[Correction] = []

        def committed(rows: list[tuple[Any, ...]]) -> None:
            # Right after the commit, in commit order with every notification: each copy's
            # `acknowledged` event is published in its seq's place (`SqliteStore._corrected`).
            for row in rows:
                fix = acknowledged_correction(row)
                made.append(fix)
                self._corrected(fix)

        await self._execute_all(
            [
                (
                    "UPDATE critical_items SET state = 'acknowledged', acknowledged_at = ?,"
                    " acknowledged_by = ?, acknowledged_via = ?, device = ?, on_behalf = ?, ack_id = ?"
                    " WHERE id = ? AND state = 'open'",
                    [(stamp, ack.by, ack.via, ack.device, int(ack.on_behalf), ack_id, item_id)],
                ),
                (
                    _INSERT_EVENTS + f" WHERE {mine}",
                    [(encode_rows([_event_row(event, stamp)]), item_id, ack_id)],
                ),
                # The rest of the chain never runs: each pending step's claim is taken, as a
                # cancellation takes it (`cancel_timer`), then the step is marked cancelled.
                (
                    "INSERT OR IGNORE INTO idempotency_keys (api_key_id, key, request_hash,"
                    f" notification_ids, status, created_at) SELECT '{TIMER_CLAIMS}', id, '', '[]', 0, ?"
                    f" FROM timers WHERE owner = ? AND state = 'pending' AND {mine}",
                    [(stamp, owner, item_id, ack_id)],
                ),
                (
                    "UPDATE timers SET state = 'cancelled', finished_at = ?,"
                    " payload = json_remove(payload, '$.content') WHERE owner = ? AND state = 'pending'"
                    f" AND {mine}",
                    [(stamp, owner, item_id, ack_id)],
                ),
                # One `acknowledged` event per live copy, each a seq of its own past every seq
                # handed out so far (the same counter as notifications and corrections).
                (
                    "INSERT INTO corrections (seq, id, notification_id, user_id, notification_seq, kind, at,"
                    f" details) SELECT ({highest_seq_sql()}) + row_number() OVER (ORDER BY n.seq),"
                    " ? || '.' || n.seq, n.id, n.user_id, n.seq, 'acknowledged', ?, ?"
                    " FROM critical_copies AS c JOIN notifications AS n ON n.id = c.notification_id"
                    f" AND (n.expires_at IS NULL OR n.expires_at > ?) WHERE c.item_id = ? AND {mine}",
                    [(ack_id, stamp, correction, stamp, item_id, item_id, ack_id)],
                ),
            ],
            query=(
                f"SELECT {_CORRECTION_COLUMNS} FROM corrections AS c"
                " WHERE c.id >= ? AND c.id < ? ORDER BY c.seq",
                (f"{ack_id}.", f"{ack_id}/"),
            ),
            on_commit=committed,
        )
        found = await self._read_now(
            f"SELECT {_ITEM}, ack_id = ? FROM critical_items WHERE id = ?", (ack_id, item_id)
        )
        if not found:
            return AcknowledgeResult("not_found")
        item = _item(found[0])
        if not found[0][16]:
            return AcknowledgeResult("already", item)
        return AcknowledgeResult("done", item, tuple(made))
