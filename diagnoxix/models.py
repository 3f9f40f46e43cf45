"""The records the service passes around: a draft to store, a stored notification, its wire form."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring as _string  # the C encoder json.dumps itself uses
from typing import Any, Literal, get_args

from diagnoxix.json_encoding import encode_json
from diagnoxix.tally import BucketsSnapshot

Priority = Literal["low", "normal", "high", "critical"]
PRIORITIES: tuple[str, ...] = get_args(Priority)

# A broadcast is stored once under this recipient; no real user id can take it (see validation).
BROADCAST_RECIPIENT = "*"


def frame_head(
    kind: str, user_id: str, title: str, message: str, data_json: str, created_text: str, nid: str
) -> str:
    """A frame's JSON up to and including `id`, without the closing brace (see `encode_frame`).

    The store builds it once per notification and uses it twice: as the row it hands SQLite
    (with the tail) and, with the seq the commit gave it, as the frame itself.
    """
    return (
        f'{{"type":{_string(kind)},"user_id":{_string(user_id)},"title":{_string(title)},'
        f'"message":{_string(message)},"data":{data_json},"timestamp":"{created_text}","id":{_string(nid)}'
    )


def frame_tail(priority: str, read: bool, links: Links | None = None) -> str:
    """What follows `"seq":N` in a frame (a notification's `url` and `actions` last, when it has them)."""
    tail = f',"priority":"{priority}","read":{"true" if read else "false"}'
    return f"{tail}{links.frame_json()}}}" if links is not None else f"{tail}}}"


@dataclass(frozen=True, slots=True)
class Action:
    """One button of a notification: a `label` and either a portal `url` to open or an `action`
    name (confirm, decline...) the user answers with, which goes back to the sender."""

    label: str
    url: str | None = None
    action: str | None = None

    def to_wire(self) -> dict[str, str]:
        if self.url is not None:
            return {"label": self.label, "url": self.url}
        return {"label": self.label, "action": self.action or ""}


@dataclass(frozen=True, slots=True)
class Links:
    """What a notification links to: a portal `url` opened on a click, up to three actions, and
    (stored, never sent to a client) the API key that sent it, to route an action's answer back."""

    url: str | None = None
    actions: tuple[Action, ...] = ()
    sent_by: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The frame's fields: `url` and `actions`, each only when there is one."""
        wire: dict[str, Any] = {}
        if self.url is not None:
            wire["url"] = self.url
        if self.actions:
            wire["actions"] = [a.to_wire() for a in self.actions]
        return wire

    def frame_json(self) -> str:
        """The frame's fields as they follow `"read"` in a frame: `,"url":...,"actions":[...]`."""
        wire = self.to_wire()
        return "," + encode_json(wire)[1:-1] if wire else ""

    def stored_json(self) -> str:
        stored = self.to_wire()
        if self.sent_by is not None:
            stored["sent_by"] = self.sent_by
        return encode_json(stored)

    def action_names(self) -> tuple[str, ...]:
        return tuple(a.action for a in self.actions if a.action is not None)

    @classmethod
    def from_stored(cls, text: str | None) -> Links | None:
        if not text:
            return None
        stored = json.loads(text)
        actions = tuple(
            Action(label=str(a["label"]), url=a.get("url"), action=a.get("action"))
            for a in stored.get("actions", ())
        )
        return cls(url=stored.get("url"), actions=actions, sent_by=stored.get("sent_by"))


@dataclass(frozen=True, slots=True)
class Wording:
    """How a typed notification may be worded again from a template: its facts as template
    variables, the locale the send named (None: the user's, else the server's default), and
    whether the sender gave its own message (kept then; only the title is templated)."""

    variables: dict[str, Any]
    locale: str | None = None
    own_message: bool = False


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision, e.g. `2024-01-15T10:30:00.123Z`.

    Formatted by hand rather than with strftime: it runs for every notification sent.
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}"
        f":{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Not frozen, for the reason Notification is not: one is built per notification of a burst.
# Keywords only, like Notification.
@dataclass(slots=True, kw_only=True)
class NotificationDraft:
    """A validated notification that is not stored yet (no id, no seq)."""

    user_id: str
    type: str
    title: str
    message: str
    data: dict[str, Any]
    priority: Priority = "normal"
    # Retention: the store stops serving and purges the notification this long after creation.
    ttl_seconds: int | None = None
    # `data` as validation encoded it (to measure it), so the store need not encode it again.
    data_json: str | None = field(default=None, compare=False, repr=False)
    # A portal link and actions (validated against the link hosts), stored with the notification.
    links: Links | None = None
    # A typed notification's facts, for its wording from a template (`delivery.wording`); None once
    # worded, and for a notification in the sender's own words.
    wording: Wording | None = field(default=None, compare=False, repr=False)


def new_ids(count: int, unix_ms: int) -> list[str]:
    """`count` time-ordered UUIDs (version 7, RFC 9562) in their canonical text form.

    48 bits of `unix_ms` (a notification's id tells no more than its timestamp does), then 74
    random bits. Ids made later sort later, so the store's unique index on them grows at its end
    instead of at random pages, and inserts are cheaper. One `os.urandom` call for all of them
    (`str(uuid.uuid4())` per notification costs several times as much).
    """
    stamp = (unix_ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
    raw = bytearray(os.urandom(16 * count))
    for at in range(0, 16 * count, 16):
        raw[at : at + 6] = stamp
        raw[at + 6] = raw[at + 6] & 0x0F | 0x70  # version 7
        raw[at + 8] = raw[at + 8] & 0x3F | 0x80  # RFC 9562 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


# Not frozen, though nothing changes one after it is built: a frozen dataclass's __init__ costs
# several times as much, and the store builds one per notification of every burst. Keywords only:
# sixteen fields are too many to pass by position.
@dataclass(slots=True, kw_only=True)
class Notification:
    seq: int
    id: str
    user_id: str
    type: str
    title: str
    message: str
    data: dict[str, Any]
    priority: Priority
    created_at: datetime
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    expires_at: datetime | None = None
    links: Links | None = None
    # `data`, `created_at` and `expires_at` as the store wrote them, kept so sending does not
    # encode them again; and the frame, once encoded (nothing changes a Notification once built;
    # a copy made with `dataclasses.replace` must pass `frame=None`).
    data_json: str | None = field(default=None, compare=False, repr=False)
    created_text: str | None = field(default=None, compare=False, repr=False)
    expires_text: str | None = field(default=None, compare=False, repr=False)
    frame: str | None = field(default=None, compare=False, repr=False)

    @property
    def is_broadcast(self) -> bool:
        return self.user_id == BROADCAST_RECIPIENT

    @property
    def url(self) -> str | None:
        """The portal link to open when the user clicks the notification (any channel's)."""
        return self.links.url if self.links is not None else None

    def delivery_state(self, recipient_online: bool) -> str:
        """Delivered, a broadcast, on its way to an open connection, or waiting for the user."""
        if self.delivered_at is not None:
            return "delivered"
        if self.is_broadcast:
            return "broadcast"
        return "sending" if recipient_online else "queued"

    def to_wire(self) -> dict[str, Any]:
        """The seed's message fields first, then ours (`seq`, `priority`, `read`)."""
        return {
            "type": self.type,
            "user_id": self.user_id,
            "title": self.title,
            "message": self.message,
            "data": self.data,
            "timestamp": format_timestamp(self.created_at),
            "id": self.id,
            "seq": self.seq,
            "priority": self.priority,
            "read": self.read_at is not None,
            **(self.links.to_wire() if self.links is not None else {}),
        }

    def to_api(self) -> dict[str, Any]:
        """The wire form plus the delivery record, for the HTTP API."""
        body = self.to_wire()
        body["delivered_at"] = format_timestamp(self.delivered_at) if self.delivered_at else None
        body["read_at"] = format_timestamp(self.read_at) if self.read_at else None
        body["expires_at"] = format_timestamp(self.expires_at) if self.expires_at else None
        return body

    def encode_frame(self) -> str:
        """The wire form as compact JSON (`ensure_ascii=False`, no spaces): the value
        `encode_json(self.to_wire())` writes, keys in the same order (a float in `data` may be
        written in another notation, 1e-07 or 1e-7, when one of the two goes through orjson).

        Assembled from parts, once per notification: it runs for every notification sent, and
        `data_json` (the data already encoded for the store) saves encoding `data` twice.
        """
        if self.frame is not None:
            return self.frame
        head = frame_head(
            self.type,
            self.user_id,
            self.title,
            self.message,
            self.data_json if self.data_json is not None else encode_json(self.data),
            self.created_text or format_timestamp(self.created_at),
            self.id,
        )
        tail = frame_tail(self.priority, self.read_at is not None, self.links)
        self.frame = f'{head},"seq":{self.seq}{tail}'
        return self.frame

    def encode_api(self, delivery: str) -> str:
        """`to_api()` plus `"delivery": delivery` as compact JSON, built on the encoded frame (the
        HTTP API answers a batch of a thousand with these)."""
        delivered = f'"{format_timestamp(self.delivered_at)}"' if self.delivered_at else "null"
        read = f'"{format_timestamp(self.read_at)}"' if self.read_at else "null"
        if self.expires_at is None:
            expires = "null"
        else:
            expires = f'"{self.expires_text or format_timestamp(self.expires_at)}"'
        return (
            f'{self.encode_frame()[:-1]},"delivered_at":{delivered},"read_at":{read},'
            f'"expires_at":{expires},"delivery":"{delivery}"}}'
        )


_new = object.__new__


def assemble_notification(
    seq: int,
    nid: str,
    user_id: str,
    kind: str,
    title: str,
    message: str,
    data: dict[str, Any],
    priority: Priority,
    created_at: datetime,
    expires_at: datetime | None,
    data_json: str,
    created_text: str,
    expires_text: str | None,
    frame: str,
    links: Links | None = None,
) -> Notification:
    """A just-committed notification (never delivered or read yet), for the store's hot path.

    `Notification(...)` takes keywords only, and a call with fourteen keywords costs several times
    what setting the fields does; the store builds one per notification of every burst
    (docs/performance.md). A test checks this sets every field as the constructor would.
    """
    note = _new(Notification)
    note.seq = seq
    note.id = nid
    note.user_id = user_id
    note.type = kind
    note.title = title
    note.message = message
    note.data = data
    note.priority = priority
    note.created_at = created_at
    note.delivered_at = None
    note.read_at = None
    note.expires_at = expires_at
    note.data_json = data_json
    note.created_text = created_text
    note.expires_text = expires_text
    note.frame = frame
    note.links = links
    return note


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": format_timestamp(self.created_at),
            "last_used_at": format_timestamp(self.last_used_at) if self.last_used_at else None,
            "revoked_at": format_timestamp(self.revoked_at) if self.revoked_at else None,
        }


def _stamp(value: datetime | None) -> str | None:
    return format_timestamp(value) if value else None


@dataclass(frozen=True, slots=True)
class Device:
    """One minted connection token of a user, named by its id (`jti`); never the token itself."""

    token_id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime | None
    user_agent: str | None
    revoked_at: datetime | None

    def to_api(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "created_at": format_timestamp(self.created_at),
            "expires_at": format_timestamp(self.expires_at),
            "last_seen_at": _stamp(self.last_seen_at),
            "user_agent": self.user_agent,
            "revoked_at": _stamp(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What a request with an `Idempotency-Key` stored the first time it ran."""

    request_hash: str
    notification_ids: tuple[str, ...]
    status: int


@dataclass(frozen=True, slots=True)
class StoreCounts:
    stored: int
    delivered: int
    # Transactions committed by the writer since start: far fewer than writes under load.
    commits: int = 0
    # Transactions that failed (disk full, I/O error): every write in them was refused.
    commit_failures: int = 0
    # Writes per committed transaction, and seconds from its first statement to its commit.
    batch_sizes: BucketsSnapshot | None = None
    commit_seconds: BucketsSnapshot | None = None
