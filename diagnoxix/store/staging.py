"""From drafts to the rows the writer thread stores, and from a commit back to notifications.

On the event loop, before the commit: each draft gets its id and expiry, its `data` is encoded
once (reused for the row and the frame), its frame is built up to the seq (`frame_head`), and its
row goes into one JSON array per insert (SQLite unpacks it with json_each, PostgreSQL with
json_array_elements). The notifications themselves are built then
too, for the seq the insert is expected to get; if the commit gives it another, they are built
again from the heads. Rows are JSON arrays, not objects: SQLite takes an array's
elements apart more cheaply, and the thread's INSERT is the longest step of a burst.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from diagnoxix.json_encoding import encode_json, encode_rows
from diagnoxix.models import (
    BROADCAST_RECIPIENT,
    PRIORITIES,
    Notification,
    NotificationDraft,
    assemble_notification,
    format_timestamp,
    frame_head,
    frame_tail,
    new_ids,
)
from diagnoxix.store.protocols import IdempotencyClaim


@dataclass(slots=True)
class InsertRows:
    """One Insert op's `count` rows as one JSON array, and its Idempotency-Key claim (api key id,
    key, request hash, status) with the notification ids it would record."""

    count: int
    rows_json: str
    claim: tuple[str, str, str, int] | None = None
    ids_json: str = ""


# Lifetime in seconds of a draft that names none, by priority; BROADCAST_RECIPIENT for broadcasts.
Lifetimes = Mapping[str, int]


@dataclass(slots=True)
class Staged:
    """One insert as prepared on the loop: per draft its id, encoded data, expiry, and its frame
    up to the seq."""

    drafts: Sequence[NotificationDraft]
    ids: list[str]
    data_json: list[str]
    expires: list[tuple[datetime | None, str | None]]
    heads: list[str]
    # The notifications as they will be once committed, built while the thread stores them, for
    # the seq the insert is expected to get; the commit says which seq it gave.
    seq_guess: int = 0
    notes: list[Notification] = field(default_factory=list)


class Stager:
    """Stages the inserts of one batch: one clock reading, each lifetime's expiry worked out once,
    and every id of the batch made in one go (a batch of 20,000 single sends, as the typed senders
    make, would otherwise draw random bytes and format an expiry 20,000 times)."""

    def __init__(self, now: datetime, stamp: str, count: int, *, json_rows: bool = True) -> None:
        """`json_rows`: encode each insert's rows as one JSON array (SQLite reads them with
        `json_each`); PostgreSQL takes its columns as arrays from the `Staged` instead."""
        self._json_rows = json_rows
        self._now = now
        self._stamp = stamp
        self._ids = new_ids(count, int(now.timestamp() * 1000))
        self._taken = 0
        self._expiry: dict[int | None, tuple[datetime | None, str | None]] = {}

    def stage(
        self,
        drafts: Sequence[NotificationDraft],
        claim: IdempotencyClaim | None,
        lifetimes: Lifetimes,
        seq_guess: int | None,
    ) -> tuple[Staged, InsertRows]:
        """Give each draft its id and expiry, encode it, and return it with its rows for the
        thread: [id, user_id, type, title, message, data (JSON text), priority, expires_at, links]
        each.

        The notifications are built here too, for `seq_guess` as the first seq: this runs while
        the thread stores the previous rows, and building them after the commit would delay
        sending every one of them (20-25 ms of a burst of 20,000). `committed_notes` checks the
        guess. No guess (None): a store whose guesses are often wrong (several processes take
        seqs) builds them once, after the commit.
        """
        start = self._taken
        ids = self._ids[start : start + len(drafts)]
        if len(ids) < len(drafts):
            raise ValueError("more drafts than the batch was counted with")
        self._taken = start + len(drafts)
        now, stamp, expiry = self._now, self._stamp, self._expiry
        data_json: list[str] = []
        expires: list[tuple[datetime | None, str | None]] = []
        heads: list[str] = []
        rows: list[list[str | None]] = []
        json_rows = self._json_rows
        for nid, draft in zip(ids, drafts, strict=True):
            if draft.priority not in PRIORITIES:
                raise ValueError("unknown priority")  # validated drafts never get here
            ttl = draft.ttl_seconds or lifetimes.get(
                BROADCAST_RECIPIENT if draft.user_id == BROADCAST_RECIPIENT else draft.priority
            )
            found = expiry.get(ttl)
            if found is None:
                found = expiry[ttl] = _expiry(now, ttl)
            encoded = draft.data_json or encode_json(draft.data)
            head = frame_head(draft.type, draft.user_id, draft.title, draft.message, encoded, stamp, nid)
            data_json.append(encoded)
            expires.append(found)
            heads.append(head)
            if json_rows:
                rows.append(
                    [
                        nid,
                        draft.user_id,
                        draft.type,
                        draft.title,
                        draft.message,
                        encoded,
                        draft.priority,
                        found[1],
                        draft.links.stored_json() if draft.links is not None else None,
                    ]
                )
        staged = Staged(drafts, ids, data_json, expires, heads, seq_guess or 0)
        if seq_guess is not None:
            staged.notes = committed_notifications(staged, seq_guess, now, stamp)
        return staged, InsertRows(
            len(drafts),
            encode_rows(rows) if json_rows else "",
            (claim.api_key_id, claim.key, claim.request_hash, claim.status) if claim else None,
            json.dumps(ids) if claim else "",
        )


def committed_notes(staged: Staged, first_seq: int, created_at: datetime, stamp: str) -> list[Notification]:
    """The notifications of a committed insert: those built when it was staged if the commit gave
    it the seq guessed then (it almost always does), else built again for the seq it got."""
    if first_seq == staged.seq_guess and staged.notes:
        return staged.notes
    return committed_notifications(staged, first_seq, created_at, stamp)


def committed_notifications(
    staged: Staged, first_seq: int, created_at: datetime, stamp: str
) -> list[Notification]:
    """The committed notifications, each with its frame: the head made when staged, the seq the
    commit gave it and the tail."""
    drafts = staged.drafts
    return [
        assemble_notification(
            first_seq + i,
            nid,
            draft.user_id,
            draft.type,
            draft.title,
            draft.message,
            draft.data,
            draft.priority,
            created_at,
            expires[0],
            data_json,
            stamp,
            expires[1],
            f'{head},"seq":{first_seq + i}{frame_tail(draft.priority, False, draft.links)}',
            draft.links,
        )
        for i, (nid, draft, data_json, expires, head) in enumerate(
            zip(staged.ids, drafts, staged.data_json, staged.expires, staged.heads, strict=True)
        )
    ]


def _expiry(now: datetime, ttl_seconds: int | None) -> tuple[datetime | None, str | None]:
    if not ttl_seconds:
        return None, None
    expires = now + timedelta(seconds=ttl_seconds)
    return expires, format_timestamp(expires)
