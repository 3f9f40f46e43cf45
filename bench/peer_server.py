"""The peer: python-socketio on aiohttp, as a Python team would otherwise build this service.

Each user joins a room named after its id on connect; a targeted notification is an `emit` to
that room, a broadcast an `emit` to everyone. No store: the no-store rate is the one we must beat
by 3x while persisting. python-socketio has no switch for permessage-deflate, so it accepts
whatever a client offers.

    python -m bench.peer_server --port P
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web

from bench.common import burst_plan, raise_nofile, seed_note

NOTES = web.AppKey("bench.notes", list[tuple[str, dict[str, Any]]])
EVENT = "notification"


def build_app() -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app)
    app[NOTES] = []
    connected: set[str] = set()

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        user = parse_qs(environ.get("QUERY_STRING", ""))["user_id"][0]
        await sio.enter_room(sid, user)
        connected.add(sid)

    async def disconnect(sid: str, *_: Any) -> None:
        connected.discard(sid)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "connections": len(connected)})

    async def prepare(request: web.Request) -> web.Response:
        spec = await request.json()
        app[NOTES] = [(user, seed_note(i, user)) for i, user in burst_plan(spec["users"], spec["count"])]
        return web.json_response({"prepared": len(app[NOTES])})

    async def burst(request: web.Request) -> web.Response:
        for user, note in app[NOTES]:
            await sio.emit(EVENT, note, to=user)
        return web.json_response({"sent": len(app[NOTES])})

    async def broadcast(request: web.Request) -> web.Response:
        await sio.emit(EVENT, seed_note(0, "*"))
        return web.json_response({"sent": len(connected)})

    async def send_one(request: web.Request) -> web.Response:
        note = await request.json()
        await sio.emit(EVENT, note, to=note["user_id"])
        return web.json_response({"sent": True}, status=201)

    app.router.add_get("/ping", ping)
    app.router.add_post("/bench/prepare", prepare)
    app.router.add_post("/bench/burst", burst)
    app.router.add_post("/bench/broadcast", broadcast)
    app.router.add_post("/bench/send", send_one)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_nofile()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
