"""`/dashboard/live`: the staff-only WebSocket that keeps the overview and send pages current.

The server pushes a snapshot every second from this handler's own pusher task; the browser never
polls. The socket belongs to one sign-in session: when that session ends (logout, expiry) the
socket is closed with 4001 and the page goes to the sign-in form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from diagnoxix.dashboard.pages_send import delivery_state
from diagnoxix.dashboard.registry import LiveSocket
from diagnoxix.dashboard.security import same_origin
from diagnoxix.dashboard.sessions import Staff, current_staff
from diagnoxix.dashboard.state import DASHBOARD
from diagnoxix.dashboard.stats import overview_figures
from diagnoxix.delivery.presence import online_recipients
from diagnoxix.edge.websockets import GuardedWebSocket
from diagnoxix.keys import PRESENCE, STORE
from diagnoxix.models import utc_now
from diagnoxix.rules.corrections import is_notification_id
from diagnoxix.store.protocols import StoreError

log = logging.getLogger("diagnoxix.dashboard")

PUSH_INTERVAL_SECONDS = 1.0
PRESENCE_ON_OPEN = 10
# The page only ever sends `{"type": "watch", "id": "<uuid>"}`.
MAX_CLIENT_FRAME_BYTES = 256
HEARTBEAT_SECONDS = 30.0


async def live_socket(request: web.Request) -> web.StreamResponse:
    # A page of another site cannot open this socket with the staff member's cookie.
    if not same_origin(request):
        raise web.HTTPForbidden(reason="the live socket is only for this dashboard's own pages")
    staff = await current_staff(request)
    if staff is None:
        raise web.HTTPUnauthorized(reason="sign in first")
    ws = GuardedWebSocket(heartbeat=HEARTBEAT_SECONDS, max_frame_bytes=MAX_CLIENT_FRAME_BYTES)
    await ws.prepare(request)
    registry = request.config_dict[DASHBOARD].live
    sock = LiveSocket(ws, staff.session_hash)
    registry.add(sock)
    watching: list[str] = []
    pusher = asyncio.create_task(_push(request, sock, staff, watching))
    try:
        async for msg in ws:
            watched = _watch_request(msg.data) if msg.type is WSMsgType.TEXT else None
            if watched is not None:
                watching[:] = [watched]
    finally:
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pusher
        registry.remove(sock)
    return ws


def _watch_request(text: str) -> str | None:
    """The id a `watch` frame names, or None: the frame is ignored.

    `id` is the only field that reaches the store, so it must have the shape of an id we make;
    a lone surrogate (valid JSON: `"\\ud800"`) or NUL would make the store read raise and end
    the pushes.
    """
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "watch":
        return None
    watched = frame.get("id")
    return watched if isinstance(watched, str) and is_notification_id(watched) else None


async def _snapshot(
    request: web.Request, watching: list[str], presence: list[dict[str, Any]]
) -> dict[str, Any]:
    sampler = request.config_dict[DASHBOARD].sampler
    snapshot: dict[str, Any] = {
        "type": "stats",
        "stats": await overview_figures(sampler, request.config_dict[PRESENCE]),
        "series": sampler.series(),
        "presence": presence,
    }
    if watching:
        found = await request.config_dict[STORE].get_notifications(watching)
        if found:
            note = found[0]
            online = note.user_id in await online_recipients(request.config_dict[PRESENCE], [note])
            snapshot["watch"] = {"id": note.id, "state": delivery_state(note, online)}
    return snapshot


async def _push(request: web.Request, sock: LiveSocket, staff: Staff, watching: list[str]) -> None:
    ws = sock.ws
    feed = request.config_dict[DASHBOARD].presence
    # A page that opens now first shows the latest few events, then every new one.
    cursor = max(0, feed.cursor - PRESENCE_ON_OPEN)
    try:
        while not ws.closed:
            if staff.expires_at <= utc_now():
                sock.ended.set()
            if sock.ended.is_set():
                await ws.close(code=sock.close_code, message=b"session ended")
                return
            presence, seen = feed.since(cursor)
            try:
                snapshot = await _snapshot(request, watching, presence)
            except StoreError:
                snapshot = None  # the store could not answer (the database gone?): try next push
            if snapshot is not None:
                await ws.send_str(json.dumps(snapshot, separators=(",", ":")))
                cursor = seen
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sock.ended.wait(), PUSH_INTERVAL_SECONDS)
    except (ConnectionError, RuntimeError):
        pass  # the page went away mid-send; the handler sees the close
    except Exception:
        # A bug of ours, not the page's doing: logged, and the socket closed so the page
        # reconnects (live.js) instead of showing the last snapshot as live, frozen.
        log.exception("dashboard.live_push_failed", extra={"username": staff.username})
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"server error")
