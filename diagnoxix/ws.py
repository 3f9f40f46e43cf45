"""`GET /v1/ws/notifications`: authenticate, upgrade, replay what was missed, then go live.

The handshake is refused (401/403/400 with the JSON error shape) before any upgrade when the
credentials or the Origin are wrong. After the upgrade only this handler reads the socket; every
frame to the client goes through its `Connection` queue, so one task writes at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass

from aiohttp import WSMessage, WSMsgType, web

from .auth import InvalidCredentials
from .errors import ApiError
from .hub import CLOSE_POLICY_VIOLATION, Connection
from .keys import HUB, SETTINGS, STORE, TOKENS
from .models import format_timestamp, utc_now
from .origin import check_origin
from .store import Store
from .validation import is_valid_user_id

log = logging.getLogger("diagnoxix.ws")

SUBPROTOCOL_V1 = "diagnoxix.v1"
BEARER_PREFIX = "bearer."
# Replay reads the backlog in pages so a long absence never builds one huge query or frame.
REPLAY_PAGE = 200
# Bad frames (malformed, unknown type, binary) tolerated before the connection is closed 1008.
MAX_STRIKES = 10
# Client frames allowed per window; clients only ping and say hello, so this is generous.
RATE_WINDOW_SECONDS = 10.0
RATE_MAX_FRAMES = 100


@dataclass(frozen=True, slots=True)
class _Handshake:
    user_id: str
    v1: bool
    protocol: str | None
    since: int | None
    via: str  # how the client identified itself: token or dev user_id


def _offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _parse_since(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "invalid_since", "since must be a non-negative integer seq")
    return int(raw)


def _authenticate(request: web.Request) -> _Handshake:
    settings = request.app[SETTINGS]
    offered = _offered_protocols(request)
    v1 = SUBPROTOCOL_V1 in offered
    bearer = next((p for p in offered if p.startswith(BEARER_PREFIX)), None)
    token = bearer[len(BEARER_PREFIX) :] if bearer else request.query.get("token")
    since = _parse_since(request.query.get("since"))
    # Browsers fail a handshake whose response names no protocol when they offered some, so a
    # client offering only its bearer protocol gets that one echoed back.
    protocol = SUBPROTOCOL_V1 if v1 else bearer
    if token:
        try:
            verified = request.app[TOKENS].verify(token)
        except InvalidCredentials as exc:
            raise ApiError(401, "invalid_token", str(exc)) from None
        return _Handshake(verified.user_id, v1, protocol, since, "token")
    user_id = request.query.get("user_id")
    if user_id is not None and settings.dev:
        if not is_valid_user_id(user_id):
            raise ApiError(
                400, "invalid_user_id", "user_id must be 1-128 characters of letters, digits and . _ : @ -"
            )
        log.warning("ws.dev_identity", extra={"user_id": user_id})
        return _Handshake(user_id, v1, protocol, since, "dev_user_id")
    if user_id is not None:
        raise ApiError(
            401,
            "token_required",
            "a connection token is required; user_id alone is accepted only in --dev mode",
        )
    raise ApiError(
        401,
        "token_required",
        "a connection token is required (subprotocol bearer.<token> or ?token=)",
    )


def _control(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def _error_frame(code: str, message: str) -> str:
    return _control("error", error={"code": code, "message": message})


class _HelloFailed(Exception):
    """The v1 client never said hello; its connection is closed."""


class _FrameGuard:
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


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings, hub, store = app[SETTINGS], app[HUB], app[STORE]
    check_origin(request, settings)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(
            400,
            "websocket_required",
            "this endpoint needs a WebSocket upgrade (GET with Upgrade: websocket)",
        )
    shake = _authenticate(request)
    ws = web.WebSocketResponse(
        protocols=(shake.protocol,) if shake.protocol else (),
        heartbeat=settings.ws_heartbeat_seconds,
        max_msg_size=settings.ws_max_client_frame_bytes,
        compress=settings.ws_compress,
    )
    await ws.prepare(request)
    conn = Connection(
        uuid.uuid4().hex,
        shake.user_id,
        ws,
        v1=shake.v1,
        queue_limit=settings.ws_send_queue_limit,
        on_delivered=store.mark_delivered,
        tasks=hub.tasks,
    )
    # Register before reading the backlog: everything published from now on queues up here, and
    # the replay stops at the watermark, so the switch from replay to live has no gap or overlap.
    watermark = hub.register(conn)
    log.info(
        "ws.connect",
        extra={"user_id": shake.user_id, "conn_id": conn.id, "v1": shake.v1, "via": shake.via},
    )
    guard = _FrameGuard()
    try:
        since = shake.since
        if shake.v1 and since is None:
            try:
                since = await _await_hello(ws, conn, guard, settings.ws_hello_timeout_seconds)
            except _HelloFailed:
                return ws
        replayed = await _replay(conn, store, shake.user_id, since, watermark)
        if shake.v1:
            await conn.send_direct(
                _control(
                    "welcome",
                    connection_id=conn.id,
                    user_id=shake.user_id,
                    server_time=format_timestamp(utc_now()),
                    since=since,
                    replayed=replayed,
                    last_seq=watermark,
                    epoch=store.epoch,
                )
            )
        conn.go_live()
        await _read_loop(ws, conn, guard)
    finally:
        hub.unregister(conn)
        conn.stop()
        log.info(
            "ws.disconnect",
            extra={"user_id": shake.user_id, "conn_id": conn.id, "close_code": ws.close_code},
        )
    return ws


async def _await_hello(
    ws: web.WebSocketResponse, conn: Connection, guard: _FrameGuard, wait_seconds: float
) -> int | None:
    """A v1 client without `since` in its URL says hello first; returns the hello's `since`.

    Raises `_HelloFailed` once the connection is closed (timeout, abuse or the client left).
    """
    try:
        async with asyncio.timeout(wait_seconds):
            async for msg in ws:
                frame = _decode(msg)
                kind = frame.get("type") if frame is not None else None
                if kind == "hello":
                    since = frame.get("since") if frame is not None else None
                    if since is None:
                        return None
                    if isinstance(since, int) and not isinstance(since, bool) and since >= 0:
                        return since
                    await conn.send_direct(
                        _error_frame("invalid_since", "since must be a non-negative integer")
                    )
                elif kind == "ping":
                    await conn.send_direct(_control("pong"))
                else:
                    await conn.send_direct(_error_frame("hello_expected", "send hello first"))
                if guard.over_rate() or guard.strike():
                    await conn.close(CLOSE_POLICY_VIOLATION, "too many invalid frames")
                    raise _HelloFailed
    except TimeoutError:
        await conn.close(CLOSE_POLICY_VIOLATION, "hello expected")
    raise _HelloFailed


async def _replay(conn: Connection, store: Store, user_id: str, since: int | None, watermark: int) -> int:
    """Send, in seq order, what the client missed up to the watermark; returns how many.

    With `since`, everything of the user (and broadcasts) after it; without, what the user was
    never sent at all (the offline queue).
    """
    after = since if since is not None else 0
    sent = 0
    while True:
        page = await store.notifications_for(
            user_id,
            after_seq=after,
            upto_seq=watermark,
            limit=REPLAY_PAGE,
            undelivered_only=since is None,
        )
        for note in page:
            await conn.send_direct(note.encode_frame())
        store.mark_delivered([note.id for note in page if not note.is_broadcast])
        sent += len(page)
        if len(page) < REPLAY_PAGE:
            return sent
        after = page[-1].seq


def _decode(msg: WSMessage) -> dict[str, object] | None:
    if msg.type is not WSMsgType.TEXT:
        return None
    try:
        frame = json.loads(msg.data)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


async def _read_loop(ws: web.WebSocketResponse, conn: Connection, guard: _FrameGuard) -> None:
    async for msg in ws:
        if guard.over_rate():
            conn.close_soon(CLOSE_POLICY_VIOLATION, "too many frames")
            continue
        frame = _decode(msg)
        kind = frame.get("type") if frame is not None else None
        if kind == "ping":
            # The seed's keepalive: plain clients get nothing back, so a UI that renders every
            # frame shows only notifications.
            if conn.v1:
                conn.offer(_control("pong", server_time=format_timestamp(utc_now())))
            continue
        if frame is None:
            error = _error_frame("invalid_frame", "frames must be JSON objects in text messages")
        elif kind == "hello":
            error = _error_frame("already_started", "hello is only valid as the first frame")
        else:
            error = _error_frame("unknown_type", f"unknown frame type {str(kind)[:32]!r}")
        if conn.v1:
            conn.offer(error)
        if guard.strike():
            conn.close_soon(CLOSE_POLICY_VIOLATION, "too many invalid frames")
