"""What the Redis broker's channel carries: one JSON message per broker call, compact.

    {"k":"n","n":[[frame, expires, user, seq],...]}   committed notifications, in seq order
    {"k":"c","u":user,"t":text,"s":seq|null}   a control frame (an unread count, a correction)
    {"k":"d","u":user,"c":code,"r":reason}     close the user's connections
    {"k":"r","u":user,"t":[[token,expiry],...],"a":all}   revoked devices
    {"k":"a","t":topic,"u":user}              an announcement (`Broker.announce`)
    {"k":"x"}                                  events were lost: every process resyncs

Events queued together go as one message, a JSON array of them (`merge`), in their order.

A notification travels as its frame (`Notification.encode_frame`, the very text its sockets are
sent, so every process sends the same bytes), its expiry, which the frame lacks, and, outside
the frame, its recipient and seq: a process rebuilds the `Notification` from the frame only when
its recipient has a connection there (`Relayed`), and learns the seq of every other one without
reading its frame. A message of an earlier version, `[frame, expires]`, is still read (a rolling
upgrade): each of those is rebuilt. The envelope holds only strings,
integers, booleans and null, where orjson writes what the standard library would
(`json_encoding`), so it is written by orjson directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from diagnoxix.delivery.broker import BrokerSubscriber, Revocation
from diagnoxix.models import Action, Links, Notification, format_timestamp, parse_timestamp

RESYNC = b'{"k":"x"}'


def merge(events: list[bytes]) -> bytes:
    """Several events as one message (`RedisLink.merge_publishes`)."""
    return b"[" + b",".join(events) + b"]"


def notifications(notes: Sequence[Notification]) -> bytes:
    entries = [[note.encode_frame(), _expires(note), note.user_id, note.seq] for note in notes]
    return orjson.dumps({"k": "n", "n": entries})


def _expires(note: Notification) -> str | None:
    if note.expires_at is None:
        return None
    return note.expires_text or format_timestamp(note.expires_at)


def control(user_id: str, text: str, seq: int | None) -> bytes:
    return orjson.dumps({"k": "c", "u": user_id, "t": text, "s": seq})


def disconnect(user_id: str, code: int, reason: str) -> bytes:
    return orjson.dumps({"k": "d", "u": user_id, "c": code, "r": reason})


def revocation(revoked: Revocation) -> bytes:
    return orjson.dumps(
        {
            "k": "r",
            "u": revoked.user_id,
            "t": [list(token) for token in revoked.tokens],
            "a": revoked.all_devices,
        }
    )


def announcement(topic: str, user_id: str) -> bytes:
    return orjson.dumps({"k": "a", "t": topic, "u": user_id})


def notification_from_frame(frame: str, expires: str | None) -> Notification:
    """The committed notification a frame was encoded from (`Notification.to_wire` backwards).

    Only what the frame carries: a committed notification was never delivered or read, and the
    API key that sent it (`Links.sent_by`) is the store's business, not a socket's.
    """
    wire = orjson.loads(frame)
    links = None
    if "url" in wire or "actions" in wire:
        actions = tuple(
            Action(label=str(a["label"]), url=a.get("url"), action=a.get("action"))
            for a in wire.get("actions", ())
        )
        links = Links(url=wire.get("url"), actions=actions)
    created = str(wire["timestamp"])
    return Notification(
        seq=int(wire["seq"]),
        id=str(wire["id"]),
        user_id=str(wire["user_id"]),
        type=str(wire["type"]),
        title=str(wire["title"]),
        message=str(wire["message"]),
        data=dict(wire["data"]),
        priority=wire["priority"],
        created_at=parse_timestamp(created),
        expires_at=parse_timestamp(expires) if expires is not None else None,
        links=links,
        created_text=created,
        expires_text=expires,
        frame=frame,
    )


class BadMessage(ValueError):
    """A message on the channel that this service did not write (or a newer version did)."""


# One committed notification as it crossed: (frame, expires, recipient, seq); recipient and seq
# are None in a message of an earlier version, which must be rebuilt to learn them.
Entry = tuple[str, str | None, str | None, int | None]


@dataclass(frozen=True, slots=True)
class Relayed:
    """Committed notifications from the channel, in seq order, not yet rebuilt: the broker
    rebuilds those a subscriber wants (`RedisBroker`)."""

    entries: list[Entry]

    def rebuild(self, entry: Entry) -> Notification:
        """The notification of one entry; BadMessage if its frame is not one this service wrote."""
        try:
            return notification_from_frame(entry[0], entry[1])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise BadMessage(type(exc).__name__) from None


@dataclass(frozen=True, slots=True)
class Announced:
    """An announcement from the channel, for the broker's listeners of its topic."""

    topic: str
    user_id: str


# One event read from the channel, to hand to each subscriber; None for a resync request.
Event = Callable[[BrokerSubscriber], None] | Relayed | Announced


def decode(raw: bytes) -> list[Event | None]:
    """Read one message (once, however many subscribers hear it): its events in order, None for
    `RESYNC` (the broker's own business). Raises BadMessage for what cannot be read."""
    try:
        message: Any = orjson.loads(raw)
    except ValueError:
        raise BadMessage("not JSON") from None
    return [_event(event) for event in message] if isinstance(message, list) else [_event(message)]


def _entry(entry: Any) -> Entry:
    if len(entry) == 2:  # an earlier version's
        frame, expires = entry
        user, seq = None, None
    else:
        frame, expires, user, seq = entry
        if not isinstance(user, str) or type(seq) is not int:
            raise TypeError("recipient or seq")
    if not isinstance(frame, str) or not (expires is None or isinstance(expires, str)):
        raise TypeError("frame or expiry")
    return frame, expires, user, seq


def _event(event: Any) -> Event | None:
    try:
        kind = event["k"]
        if kind == "n":
            return Relayed([_entry(entry) for entry in event["n"]])
        if kind == "c":
            user_id, text, seq = str(event["u"]), str(event["t"]), event["s"]
            seq = None if seq is None else int(seq)
            return lambda subscriber: subscriber.send_control(user_id, text, seq)
        if kind == "d":
            user_id, code, reason = str(event["u"]), int(event["c"]), str(event["r"])
            return lambda subscriber: subscriber.disconnect(user_id, code, reason)
        if kind == "r":
            tokens = tuple((str(token), float(expiry)) for token, expiry in event["t"])
            revoked = Revocation(str(event["u"]), tokens, bool(event["a"]))
            return lambda subscriber: subscriber.revoke(revoked)
        if kind == "a":
            return Announced(str(event["t"]), str(event["u"]))
        if kind == "x":
            return None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BadMessage(type(exc).__name__) from None
    raise BadMessage("an unknown kind of event")
