"""`GET /v1/sse/notifications`: the v1 stream as server-sent events, for networks whose proxies
strip the WebSocket upgrade (docs/protocol.md, "SSE fallback").

Everything but the transport is the WebSocket's (ws/handler.py): the same credentials (`?token=`,
or `Authorization: Bearer <token>` where a client can set headers; `?user_id=` in --dev only), the
same Origin check, per-user connection cap, replay and live fan-out. The stream is a `Connection`
in the hub like any socket, with its bounded queue and write timeout, so a client that stops
reading is dropped (1013) and resumes from the store. Frames are the v1 frames (`welcome`,
notifications, `unread`, `retracted`, `updated`), one event each (ws/sse_stream.py).

Resume: `Last-Event-ID` (the browser sends the last event's id, a seq, when it reconnects by
itself) or else `?since=`, with `?epoch=`. Nothing comes from the client on the stream: acks and
read marks are HTTP calls with the user's token (api/acks.py, api/users.py). A token cannot be
refreshed in-band: the stream closes when it expires (`close` event, 4001) and the client
reconnects with a fresh one. Comment lines every `sse_heartbeat_seconds` keep proxies from timing
out an idle stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from diagnoxix.auth import ConnectionToken, InvalidCredentials
from diagnoxix.delivery import frames
from diagnoxix.delivery.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOKEN_REVOKED,
    CLOSE_TRY_AGAIN_LATER,
    Connection,
)
from diagnoxix.delivery.resume import plan_resume, replay
from diagnoxix.edge.clients import stored_user_agent
from diagnoxix.errors import ApiError
from diagnoxix.keys import FORWARDING, HUB, PRESENCE, SETTINGS, STORE, TOKENS
from diagnoxix.models import format_timestamp, utc_now
from diagnoxix.rules import SINCE_SEQ, USER_ID_SHAPE, is_valid_user_id
from diagnoxix.store.protocols import StoreError
from diagnoxix.ws.handler import parse_epoch, parse_since
from diagnoxix.ws.origin import check_origin
from diagnoxix.ws.sse_stream import SseSocket, StreamSide

log = logging.getLogger("diagnoxix.sse")

SSE_PATH = "/v1/sse/notifications"
LAST_EVENT_ID = "Last-Event-ID"
# How often a live stream checks that its client is still there (see `_until_gone`).
GONE_POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Opening:
    user_id: str
    since: int | None
    epoch: str | None
    via: str  # token or dev_user_id
    device: ConnectionToken | None = None  # the verified token (None in dev mode)


def _presented_token(request: web.Request) -> str | None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and presented.strip():
        return presented.strip()
    return request.query.get("token") or None


def _cursor(request: web.Request) -> int | None:
    """`Last-Event-ID` when the client sends one (the browser's own reconnect), else `?since=`."""
    raw = request.headers.get(LAST_EVENT_ID, "").strip()
    if not raw:
        return parse_since(request.query.get("since"))
    since = SINCE_SEQ.parse(raw)
    if since is None:
        raise ApiError(
            400,
            "invalid_last_event_id",
            f"Last-Event-ID must be an event id (a seq: {SINCE_SEQ.text})",
        )
    return since


def _authenticate(request: web.Request) -> _Opening:
    settings = request.app[SETTINGS]
    since = _cursor(request)
    epoch = parse_epoch(request.query.get("epoch"))
    token = _presented_token(request)
    if token:
        try:
            verified = request.app[TOKENS].verify(token)
        except InvalidCredentials as exc:
            raise ApiError(401, "invalid_token", str(exc)) from None
        return _Opening(verified.user_id, since, epoch, "token", verified)
    user_id = request.query.get("user_id")
    if user_id is not None and settings.dev:
        if not is_valid_user_id(user_id):
            raise ApiError(400, "invalid_user_id", f"user_id must be {USER_ID_SHAPE}")
        log.warning("sse.dev_identity", extra={"user_id": user_id})
        return _Opening(user_id, since, epoch, "dev_user_id")
    raise ApiError(
        401,
        "token_required",
        "a connection token is required (?token= or Authorization: Bearer); user_id alone only in --dev mode",
    )


async def _admit(request: web.Request) -> _Opening:
    """Check the request before any byte of the stream; raises `ApiError` to refuse it (the error
    middleware answers in the JSON shape; the rate limits ran in their middleware)."""
    settings = request.app[SETTINGS]
    check_origin(request, settings, request.app[FORWARDING])
    opening = _authenticate(request)
    # The user's connections in every process (with Redis; this one's otherwise).
    connections, _ = await request.app[PRESENCE].user(opening.user_id)
    if connections >= settings.ws_max_connections_per_user:
        raise ApiError(
            429,
            "too_many_connections",
            f"this user already has {settings.ws_max_connections_per_user} open connections",
        )
    return opening


async def sse_handler(request: web.Request) -> web.StreamResponse:
    opening = await _admit(request)
    app = request.app
    settings, hub = app[SETTINGS], app[HUB]
    response = EventSourceResponse(
        ping_interval=settings.sse_heartbeat_seconds, send_timeout=settings.ws_write_timeout_seconds
    )
    # Patient data: never stored by a cache (aiohttp-sse says only `no-cache`).
    response.headers["Cache-Control"] = "no-store"
    await response.prepare(request)
    conn = Connection(
        uuid.uuid4().hex,
        opening.user_id,
        SseSocket(response),
        v1=True,
        queue_limit=settings.ws_send_queue_limit,
        hub=hub,
        write_side=StreamSide(request),
        token_id=opening.device.token_id if opening.device else None,
    )
    try:
        if await _catch_up(request, conn, opening):
            del opening
            await _until_gone(request, response)
    except ConnectionError:
        pass  # the client left mid-replay; it resumes with its cursor next time
    except StoreError:
        await conn.close(CLOSE_TRY_AGAIN_LATER, "store unavailable; reconnect to resume")
    except Exception:
        # The response is a stream now: never write an error page into it.
        log.exception("sse.handler_failed", extra={"user_id": conn.user_id, "conn_id": conn.id})
        await conn.close(CLOSE_INTERNAL_ERROR, "internal error")
    finally:
        hub.unregister(conn)
        conn.stop()
        if response.is_connected():
            response.stop_streaming()
        hub.counters.closed(conn.closed_with)
        log.info(
            "sse.disconnect",
            extra={"user_id": conn.user_id, "conn_id": conn.id, "close_code": conn.closed_with},
        )
    return response


async def _until_gone(request: web.Request, response: EventSourceResponse) -> None:
    """Until the stream ends: closed by the server, a heartbeat that could not be written, or the
    client gone. aiohttp does not cancel a handler whose client left, and nothing is read from
    the stream, so the transport is looked at every `GONE_POLL_SECONDS`: a page that moved back
    to its WebSocket leaves the hub (presence, the per-user cap) at once, not at the next write."""
    ended = asyncio.ensure_future(response.wait())
    try:
        while not ended.done():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.wait((ended,), timeout=GONE_POLL_SECONDS)
    finally:
        ended.cancel()


async def _catch_up(request: web.Request, conn: Connection, opening: _Opening) -> bool:
    """Register, replay what was missed, welcome, go live (as ws.handler does).

    Returns False when the connection was closed before it started.
    """
    app = request.app
    hub, store = app[HUB], app[STORE]
    # Register before reading the backlog: the replay stops at the watermark, live frames queue.
    watermark = hub.register(conn)
    if hub.closed:
        await conn.close(CLOSE_GOING_AWAY, "server shutdown")
        return False
    device = opening.device
    if device is not None:
        if app[TOKENS].is_revoked(device.token_id):
            await conn.close(CLOSE_TOKEN_REVOKED, "token revoked")
            return False
        store.touch_device(
            device.token_id, device.user_id, device.issued_at, device.expires_at, stored_user_agent(request)
        )
    log.info("sse.connect", extra={"user_id": opening.user_id, "conn_id": conn.id, "via": opening.via})
    plan = await plan_resume(opening.user_id, opening.since, opening.epoch, store, watermark)
    replayed = await replay(conn, store, plan, watermark)
    hub.counters.replayed += replayed
    expires_at = device.expires_at if device is not None else None
    await conn.send_direct(
        frames.control(
            "welcome",
            connection_id=conn.id,
            user_id=opening.user_id,
            server_time=format_timestamp(utc_now()),
            since=opening.since,
            epoch=store.epoch,
            last_seq=watermark,
            replayed=replayed,
            recovered=plan.recovered,
            **({"reason": plan.reason} if plan.reason else {}),
            unread=await store.unread_count(opening.user_id, upto_seq=watermark),
            token_expires_at=format_timestamp(expires_at) if expires_at else None,
            transport="sse",
        )
    )
    conn.go_live()
    if expires_at is not None:
        _close_at_expiry(conn, expires_at)
    return True


def _close_at_expiry(conn: Connection, expires_at: datetime) -> None:
    """The stream cannot take a fresh token: it closes (4001) when its token expires, and the
    client reconnects with a new one (the connection's timer slot; `Connection.stop` cancels it)."""
    delay = max(expires_at.timestamp() - time.time(), 0.0)
    conn.timer = asyncio.get_running_loop().call_later(
        delay, conn.close_soon, CLOSE_TOKEN_EXPIRED, "token expired"
    )
