"""`GET /v1/ws/notifications`: authenticate, upgrade, replay what was missed, then go live.

The handshake is refused (401/403/400 with the JSON error shape) before any upgrade when the
credentials or the Origin are wrong. After the upgrade only this handler reads the socket; every
frame to the client goes through its `Connection` queue, so one task writes at a time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl

from aiohttp import web

from diagnoxix.auth import ConnectionToken, InvalidCredentials
from diagnoxix.delivery import frames
from diagnoxix.delivery.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOKEN_REVOKED,
    CLOSE_TRY_AGAIN_LATER,
    Connection,
)
from diagnoxix.delivery.resume import plan_resume, replay
from diagnoxix.edge.clients import stored_user_agent
from diagnoxix.edge.websockets import GuardedWebSocket
from diagnoxix.errors import ApiError, answers_own_errors, response_for
from diagnoxix.keys import CRITICAL, FORWARDING, HUB, LIMITS, PRESENCE, SERVICE, SETTINGS, STORE, TOKENS
from diagnoxix.models import format_timestamp, utc_now
from diagnoxix.rules import SINCE_SEQ, USER_ID_SHAPE, is_valid_epoch, is_valid_user_id
from diagnoxix.store.protocols import StoreError
from diagnoxix.ws.origin import check_origin
from diagnoxix.ws.session import FrameGuard, Session, decode

log = logging.getLogger("diagnoxix.ws")

SUBPROTOCOL_V1 = "diagnoxix.v1"
BEARER_PREFIX = "bearer."


@dataclass(frozen=True, slots=True)
class _Handshake:
    user_id: str
    v1: bool
    protocol: str | None
    since: int | None
    epoch: str | None
    via: str  # how the client identified itself: token or dev user_id
    expires_at: datetime | None
    device: ConnectionToken | None = None  # the verified token (None in dev mode)


def _offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def parse_since(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    since = SINCE_SEQ.parse(raw)
    if since is None:
        raise ApiError(400, "invalid_since", f"since must be a seq: {SINCE_SEQ.text}")
    return since


def parse_epoch(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if not is_valid_epoch(raw):
        raise ApiError(400, "invalid_epoch", "epoch must be the value a welcome frame gave")
    return raw


def _query_params(request: web.Request) -> dict[str, str]:
    """The handshake's query parameters (the first of repeated names, as `request.query` gives).

    Parsed here rather than through `request.query`, which caches its parse (the token
    included) on the request and its URL for the connection's lifetime: 0.9 KiB of RSS per idle
    connection, measured by the benchmark.
    """
    params: dict[str, str] = {}
    for name, value in parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True):
        params.setdefault(name, value)
    return params


def _authenticate(request: web.Request) -> _Handshake:
    settings = request.app[SETTINGS]
    query = _query_params(request)
    offered = _offered_protocols(request)
    v1 = SUBPROTOCOL_V1 in offered
    bearer = next((p for p in offered if p.startswith(BEARER_PREFIX)), None)
    token = bearer[len(BEARER_PREFIX) :] if bearer else query.get("token")
    since = parse_since(query.get("since"))
    epoch = parse_epoch(query.get("epoch"))
    # Browsers fail a handshake whose response names no protocol when they offered some, so a
    # client offering only its bearer protocol gets that one echoed back.
    protocol = SUBPROTOCOL_V1 if v1 else bearer
    if token:
        try:
            verified = request.app[TOKENS].verify(token)
        except InvalidCredentials as exc:
            raise ApiError(401, "invalid_token", str(exc)) from None
        return _Handshake(
            verified.user_id, v1, protocol, since, epoch, "token", verified.expires_at, verified
        )
    user_id = query.get("user_id")
    if user_id is not None and settings.dev:
        if not is_valid_user_id(user_id):
            raise ApiError(400, "invalid_user_id", f"user_id must be {USER_ID_SHAPE}")
        log.warning("ws.dev_identity", extra={"user_id": user_id})
        return _Handshake(user_id, v1, protocol, since, epoch, "dev_user_id", None)
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


class _HelloFailed(Exception):
    """The v1 client never said hello; its connection is closed."""


# This coroutine lives as long as the socket, and everything it references with it. So it is
# kept small: no middleware coroutine around it (`answers_own_errors`), the handshake and the
# catch-up run in helpers whose frames are gone once the connection is live, and no log call is
# made from it before the socket closes (logging's caller lookup would give this frame a
# frame object of its full size for the connection's lifetime).
@answers_own_errors
async def websocket_handler(request: web.Request) -> web.StreamResponse:
    try:
        ws, shake = await _upgrade(request)
    except Exception as exc:
        # Before the upgrade, a refusal is an HTTP answer in the one JSON error shape.
        return response_for(request, exc)
    session = _new_session(request, ws, shake)
    conn = session.conn
    try:
        if await _catch_up(request, ws, session, shake):
            del shake  # done with; not kept for the connection's lifetime
            async for msg in ws:
                await session.handle(msg)
    except ConnectionError:
        pass  # the client left mid-replay; it resumes with its cursor next time
    except StoreError:
        # Replay could not read the backlog: the client resumes later with the same cursor.
        await conn.close(CLOSE_TRY_AGAIN_LATER, "store unavailable; reconnect to resume")
    except Exception:
        # The response is a WebSocket now: never let an HTTP error page be written into it.
        log.exception("ws.handler_failed", extra={"user_id": conn.user_id, "conn_id": conn.id})
        await conn.close(CLOSE_INTERNAL_ERROR, "internal error")
    finally:
        hub = request.app[HUB]
        hub.unregister(conn)
        conn.stop()
        # The code the server closed with, when it did; else the one the client sent.
        code = conn.closed_with if conn.closed_with is not None else ws.close_code
        hub.counters.closed(code)
        log.info("ws.disconnect", extra={"user_id": conn.user_id, "conn_id": conn.id, "close_code": code})
    return ws


async def _upgrade(request: web.Request) -> tuple[web.WebSocketResponse, _Handshake]:
    """Check the handshake and upgrade; raises `ApiError` (or aiohttp's HTTP errors) to refuse."""
    settings = request.app[SETTINGS]
    check_origin(request, settings, request.app[FORWARDING])
    await request.app[LIMITS].admit(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(
            400,
            "websocket_required",
            "this endpoint needs a WebSocket upgrade (GET with Upgrade: websocket)",
        )
    shake = _authenticate(request)
    # The user's connections in every process (with Redis; this one's otherwise).
    connections, _ = await request.app[PRESENCE].user(shake.user_id)
    if connections >= settings.ws_max_connections_per_user:
        raise ApiError(
            429,
            "too_many_connections",
            f"this user already has {settings.ws_max_connections_per_user} open connections",
        )
    ws = GuardedWebSocket(
        protocols=(shake.protocol,) if shake.protocol else (),
        heartbeat=settings.ws_heartbeat_seconds,
        max_frame_bytes=settings.ws_max_client_frame_bytes,
        compress=settings.ws_compress,
    )
    await ws.prepare(request)
    return ws, shake


def _new_session(request: web.Request, ws: web.WebSocketResponse, shake: _Handshake) -> Session:
    app = request.app
    settings, store = app[SETTINGS], app[STORE]
    conn = Connection(
        uuid.uuid4().hex,
        shake.user_id,
        ws,
        v1=shake.v1,
        queue_limit=settings.ws_send_queue_limit,
        hub=app[HUB],
        write_side=request.protocol,
        token_id=shake.device.token_id if shake.device else None,
    )
    return Session(
        conn, store, app[SERVICE], app[TOKENS], settings, FrameGuard(), shake.expires_at, app[CRITICAL]
    )


async def _catch_up(
    request: web.Request, ws: web.WebSocketResponse, session: Session, shake: _Handshake
) -> bool:
    """Register, replay what was missed, welcome a v1 client, go live.

    Returns False when the connection was closed before it started (no hello).
    """
    settings, hub, store = request.app[SETTINGS], request.app[HUB], request.app[STORE]
    conn = session.conn
    # Register before reading the backlog: everything published from now on queues up here, and
    # the replay stops at the watermark, so the switch from replay to live has no gap or overlap.
    watermark = hub.register(conn)
    if hub.closed:
        # Shutdown began while this socket was being upgraded: `close_all` has already run.
        await conn.close(CLOSE_GOING_AWAY, "server shutdown")
        return False
    device = shake.device
    if device is not None:
        if session.tokens.is_revoked(device.token_id):
            # Revoked between the check before the upgrade and registering: the hub's close missed it.
            await conn.close(CLOSE_TOKEN_REVOKED, "token revoked")
            return False
        agent = stored_user_agent(request)
        store.touch_device(device.token_id, device.user_id, device.issued_at, device.expires_at, agent)
    log.info(
        "ws.connect",
        extra={"user_id": shake.user_id, "conn_id": conn.id, "v1": shake.v1, "via": shake.via},
    )
    since, epoch = shake.since, shake.epoch
    if shake.v1 and since is None:
        try:
            since, epoch = await _await_hello(ws, conn, session.guard, settings.ws_hello_timeout_seconds)
        except _HelloFailed:
            return False
    plan = await plan_resume(shake.user_id, since, epoch, store, watermark)
    replayed = await replay(conn, store, plan, watermark)
    hub.counters.replayed += replayed
    if shake.v1:
        await conn.send_direct(
            frames.control(
                "welcome",
                connection_id=conn.id,
                user_id=shake.user_id,
                server_time=format_timestamp(utc_now()),
                since=since,
                epoch=store.epoch,
                last_seq=watermark,
                replayed=replayed,
                recovered=plan.recovered,
                **({"reason": plan.reason} if plan.reason else {}),
                # Up to the watermark: live frames queued behind the welcome are counted by
                # the client as they arrive.
                unread=await store.unread_count(shake.user_id, upto_seq=watermark),
                token_expires_at=format_timestamp(shake.expires_at) if shake.expires_at else None,
            )
        )
    conn.go_live()
    session.schedule_token_timers(shake.expires_at)
    return True


async def _await_hello(
    ws: web.WebSocketResponse, conn: Connection, guard: FrameGuard, wait_seconds: float
) -> tuple[int | None, str | None]:
    """A v1 client without `since` in its URL says hello first; returns its (since, epoch).

    Raises `_HelloFailed` once the connection is closed (timeout, abuse or the client left).
    """
    try:
        async with asyncio.timeout(wait_seconds):
            async for msg in ws:
                frame = decode(msg)
                kind = frame.get("type") if frame is not None else None
                if frame is not None and kind == "hello":
                    raw_since, epoch = frame.get("since"), frame.get("epoch")
                    since = SINCE_SEQ.integer(raw_since)
                    if (raw_since is None or since is not None) and (epoch is None or is_valid_epoch(epoch)):
                        return since, epoch
                    await conn.send_direct(
                        frames.error(
                            "invalid_hello", "since must be a non-negative seq, epoch a welcome's epoch"
                        )
                    )
                elif kind == "ping":
                    await conn.send_direct(frames.control("pong"))
                    if not guard.over_rate():
                        continue
                else:
                    await conn.send_direct(frames.error("hello_expected", "send hello first"))
                if guard.over_rate() or guard.strike():
                    await conn.close(CLOSE_POLICY_VIOLATION, "too many invalid frames")
                    raise _HelloFailed
    except TimeoutError:
        await conn.close(CLOSE_POLICY_VIOLATION, "hello expected")
    raise _HelloFailed
