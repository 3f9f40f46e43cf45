"""What a connected client may say, and what the server answers (docs/protocol.md).

Client frames: `ping`, `ack`, `read`, `read_all`, `history`, `token`, `acknowledge` (and `hello`
before the welcome). Replies and errors go only to v1 clients; a plain client's frames still take effect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import WSMessage, WSMsgType

from diagnoxix.auth import InvalidCredentials, TokenIssuer
from diagnoxix.config import Settings
from diagnoxix.delivery import frames
from diagnoxix.delivery.connection import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOKEN_EXPIRED,
    Connection,
)
from diagnoxix.delivery.critical import CriticalService
from diagnoxix.delivery.service import NotificationService
from diagnoxix.delivery.wire import text_frame
from diagnoxix.json_encoding import decode_json
from diagnoxix.models import format_timestamp, utc_now
from diagnoxix.rules import (
    CURSOR_SEQ,
    DEFAULT_HISTORY_PAGE,
    FRAME_IDS,
    HISTORY_PAGE,
    ids_problem,
    is_type_name,
    next_cursor,
    request_id,
)
from diagnoxix.store.critical_records import Acknowledgement
from diagnoxix.store.protocols import Store, StoreError

log = logging.getLogger("diagnoxix.ws")

# Bad frames (malformed, unknown type, binary) tolerated before the connection is closed 1008.
MAX_STRIKES = 10
# Client frames allowed per window: acks come one frame per page of notifications, so this is
# generous for a real client and tight for a flood.
RATE_WINDOW_SECONDS = 10.0
RATE_MAX_FRAMES = 200
# What a frame may carry (ids, cursors, page sizes, request ids) is in `diagnoxix.rules`.


class FrameGuard:
    """Counts bad and excessive client frames; past the limits the connection is closed 1008."""

    __slots__ = ("frames", "strikes", "window_start")

    def __init__(self) -> None:
        self.strikes = 0
        self.window_start = time.monotonic()
        self.frames = 0

    def over_rate(self) -> bool:
        now = time.monotonic()
        if now - self.window_start > RATE_WINDOW_SECONDS:
            self.window_start, self.frames = now, 0
        self.frames += 1
        return self.frames > RATE_MAX_FRAMES

    def strike(self) -> bool:
        self.strikes += 1
        return self.strikes >= MAX_STRIKES


def decode(msg: WSMessage) -> dict[str, Any] | None:
    if msg.type is not WSMsgType.TEXT:
        return None
    try:
        frame = decode_json(msg.data)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays within 16 KiB
        return None
    return frame if isinstance(frame, dict) else None


class FrameError(Exception):
    """A client frame that cannot be honoured; becomes an error frame and a strike."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _ids(frame: dict[str, Any]) -> list[str]:
    ids = frame.get("ids")
    if ids is None and isinstance(frame.get("id"), str):
        ids = [frame["id"]]
    if (problem := ids_problem(ids, FRAME_IDS)) is not None:
        raise FrameError("invalid_ids", f"ids {problem}")
    assert isinstance(ids, list)
    return ids


def _request_id(frame: dict[str, Any]) -> dict[str, str]:
    rid = request_id(frame.get("request_id"))
    return {"request_id": rid} if rid is not None else {}


@dataclass(slots=True)
class Session:
    """One connected client's protocol state, owned by its handler task."""

    conn: Connection
    store: Store
    service: NotificationService
    tokens: TokenIssuer
    settings: Settings
    guard: FrameGuard
    token_expires_at: datetime | None
    # Critical results: a person acknowledges a critical item (`acknowledge`).
    critical: CriticalService | None = None

    def reply(self, text: str) -> None:
        if self.conn.v1:
            self.conn.offer(text_frame(text))

    async def handle(self, msg: WSMessage) -> None:
        """One frame after the welcome. Never raises for bad input: errors go back as frames."""
        if self.guard.over_rate():
            self.conn.close_soon(CLOSE_POLICY_VIOLATION, "too many frames")
            return
        frame = decode(msg)
        try:
            if frame is None:
                raise FrameError("invalid_frame", "frames must be JSON objects in text messages")
            kind = frame.get("type")
            if kind == "ping":
                # The seed's keepalive: plain clients get nothing back, so a UI that renders
                # every frame shows only notifications.
                self.reply(
                    frames.control("pong", server_time=format_timestamp(utc_now()), **_request_id(frame))
                )
            elif kind == "ack":
                mine = await self.store.acknowledge(self.conn.user_id, _ids(frame))
                self.reply(frames.control("ack", ids=mine, **_request_id(frame)))
            elif kind == "read":
                marked, unread = await self.service.mark_read(self.conn.user_id, _ids(frame))
                self.reply(frames.control("read", ids=marked, unread=unread, **_request_id(frame)))
            elif kind == "read_all":
                changed, unread = await self.service.mark_all_read(self.conn.user_id)
                self.reply(frames.control("read_all", count=changed, unread=unread, **_request_id(frame)))
            elif kind == "history":
                await self._history(frame)
            elif kind == "token":
                self._refresh_token(frame)
            elif kind == "acknowledge":
                await self._acknowledge(frame)
            elif kind == "hello":
                raise FrameError("already_started", "hello is only valid as the first frame")
            else:
                raise FrameError("unknown_type", f"unknown frame type {str(kind)[:32]!r}")
        except FrameError as exc:
            self.reply(frames.error(exc.code, str(exc), **(_request_id(frame) if frame else {})))
            if self.guard.strike():
                self.conn.close_soon(CLOSE_POLICY_VIOLATION, "too many invalid frames")
        except StoreError:
            # A database hiccup (locked by a CLI tool, shutting down): the client may retry.
            self.reply(
                frames.error("unavailable", "try again shortly", **(_request_id(frame) if frame else {}))
            )
        except Exception:
            log.exception("ws.frame_failed", extra={"user_id": self.conn.user_id, "conn_id": self.conn.id})
            self.conn.close_soon(CLOSE_INTERNAL_ERROR, "internal error")

    async def _history(self, frame: dict[str, Any]) -> None:
        before = frame.get("before")
        limit = frame.get("limit", DEFAULT_HISTORY_PAGE)
        kind = frame.get("filter_type")
        unread = frame.get("unread", False)
        if before is not None and (before := CURSOR_SEQ.integer(before)) is None:
            raise FrameError("invalid_history", "before must be a positive seq (a next_cursor)")
        if (limit := HISTORY_PAGE.integer(limit)) is None:
            raise FrameError("invalid_history", f"limit must be {HISTORY_PAGE.text}")
        if kind is not None and not is_type_name(kind):
            raise FrameError("invalid_history", "filter_type must be a notification type")
        if not isinstance(unread, bool):
            raise FrameError("invalid_history", "unread must be true or false")
        notes = await self.store.history(
            self.conn.user_id, before_seq=before, limit=limit, type=kind, unread_only=unread
        )
        self.reply(
            frames.control(
                "history",
                notifications=[n.to_wire() for n in notes],
                next_cursor=next_cursor(notes, limit),
                **_request_id(frame),
            )
        )

    async def _acknowledge(self, frame: dict[str, Any]) -> None:
        """A person acknowledges a critical item by one of their copies (docs/critical.md)."""
        (notification_id,) = _ids({"ids": [frame.get("id")]})
        item = await self.critical.item_of_copy(notification_id, self.conn.user_id) if self.critical else None
        if item is None:
            raise FrameError("not_critical", "no critical item of yours has a copy with that id")
        if not item.requires_ack:
            raise FrameError("acknowledgement_not_required", "this group send needs no acknowledgement")
        assert self.critical is not None
        ack = Acknowledgement(self.conn.user_id, "socket", self.conn.token_id)
        result = await self.critical.acknowledge(item, ack)
        closed = result.item or item
        self.reply(
            frames.control(
                "acknowledge",
                id=notification_id,
                critical_id=item.id,
                changed=result.outcome == "done",
                acknowledged_by=closed.acknowledged_by,
                acknowledged_at=format_timestamp(closed.acknowledged_at) if closed.acknowledged_at else None,
                **_request_id(frame),
            )
        )

    def _refresh_token(self, frame: dict[str, Any]) -> None:
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise FrameError("invalid_token", "token must be a connection token")
        try:
            verified = self.tokens.verify(token)
        except InvalidCredentials as exc:
            raise FrameError("invalid_token", str(exc)) from None
        if verified.user_id != self.conn.user_id:
            # A connection never changes whose notifications it carries.
            self.conn.close_soon(CLOSE_POLICY_VIOLATION, "token is for another user")
            return
        # The connection now stands for the new token's device: revoking that one closes it.
        self.conn.token_id = verified.token_id
        self.store.touch_device(
            verified.token_id, verified.user_id, verified.issued_at, verified.expires_at, None
        )
        self.schedule_token_timers(verified.expires_at)
        self.reply(
            frames.control(
                "refreshed", expires_at=format_timestamp(verified.expires_at), **_request_id(frame)
            )
        )

    def schedule_token_timers(self, expires_at: datetime | None) -> None:
        """Ask for a fresh token shortly before expiry; close 4001 after expiry plus grace.

        One timer at a time: the ask, and once it is out, the deadline. Each pending timer costs
        an idle connection a handle, a context and a callback (~240 B), so the deadline is not
        armed before it can be next, and a plain client, which never gets the ask, has only the
        deadline.
        """
        self._cancel_token_timer()
        self.token_expires_at = expires_at
        if expires_at is None:
            return
        if self.conn.v1:
            remaining = expires_at.timestamp() - time.time()
            lead = min(self.settings.token_refresh_lead_seconds, max(remaining / 2, 0))
            self._arm_token_timer(remaining - lead, self._ask_for_token)
        else:
            self._arm_deadline(expires_at)

    def _ask_for_token(self) -> None:
        expires_at = self.token_expires_at
        if expires_at is None:
            return
        self.reply(frames.control("refresh", expires_at=format_timestamp(expires_at)))
        self._arm_deadline(expires_at)

    def _arm_deadline(self, expires_at: datetime) -> None:
        remaining = expires_at.timestamp() - time.time()
        self._arm_token_timer(remaining + self.settings.token_expiry_grace_seconds, self._token_expired)

    def _token_expired(self) -> None:
        self.conn.close_soon(CLOSE_TOKEN_EXPIRED, "token expired")

    def _arm_token_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_token_timer()
        loop = asyncio.get_running_loop()
        self.conn.timer = loop.call_later(max(delay, 0), callback)

    def _cancel_token_timer(self) -> None:
        if self.conn.timer is not None:
            self.conn.timer.cancel()
            self.conn.timer = None
