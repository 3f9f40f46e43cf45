"""The ceiling: a bare aiohttp server that only holds sockets and writes pre-built frames.

No store, no auth, no queue, no heartbeat: whatever Diagnoxix Notify does on top of aiohttp costs
something, and this server shows how fast aiohttp alone is on this machine with the same client
and the same message. Frames are built by `/bench/prepare`, outside the timed part.

    python -m bench.ceiling_server --port P [--deflate]
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

from bench.common import burst_plan, raise_nofile, seed_note

SOCKETS = web.AppKey("bench.sockets", dict[str, web.WebSocketResponse])
FRAMES = web.AppKey("bench.frames", list[tuple[str, str]])
DEFLATE = web.AppKey("bench.deflate", bool)


async def websocket(request: web.Request) -> web.StreamResponse:
    user = request.query["user_id"]
    # compress=False declines permessage-deflate (the cheapest socket); --deflate accepts it as
    # aiohttp does by default, to show what a browser's deflate offer costs an idle socket.
    ws = web.WebSocketResponse(compress=request.app[DEFLATE])
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets[user] = ws
    try:
        async for _ in ws:
            pass
    finally:
        if sockets.get(user) is ws:
            del sockets[user]
    return ws


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "connections": len(request.app[SOCKETS])})


async def prepare(request: web.Request) -> web.Response:
    spec = await request.json()
    sep = (",", ":")
    request.app[FRAMES] = [
        (user, json.dumps(seed_note(i, user), separators=sep))
        for i, user in burst_plan(spec["users"], spec["count"])
    ]
    return web.json_response({"prepared": len(request.app[FRAMES])})


async def burst(request: web.Request) -> web.Response:
    sockets = request.app[SOCKETS]
    sent = 0
    for user, text in request.app[FRAMES]:
        ws = sockets.get(user)
        if ws is not None:
            await ws.send_str(text)
            sent += 1
    return web.json_response({"sent": sent})


async def broadcast(request: web.Request) -> web.Response:
    text = json.dumps(seed_note(0, "*"), separators=(",", ":"))
    recipients = list(request.app[SOCKETS].values())
    for ws in recipients:
        await ws.send_str(text)
    return web.json_response({"sent": len(recipients)})


async def send_one(request: web.Request) -> web.Response:
    """One notification per request: the body is the frame; only the recipient is read from it."""
    text = await request.text()
    ws = request.app[SOCKETS].get(json.loads(text)["user_id"])
    if ws is not None:
        await ws.send_str(text)
    return web.json_response({"sent": ws is not None}, status=201)


def build_app(*, deflate: bool) -> web.Application:
    app = web.Application()
    app[SOCKETS] = {}
    app[FRAMES] = []
    app[DEFLATE] = deflate
    app.router.add_get("/ws", websocket)
    app.router.add_get("/ping", ping)
    app.router.add_post("/bench/prepare", prepare)
    app.router.add_post("/bench/burst", burst)
    app.router.add_post("/bench/broadcast", broadcast)
    app.router.add_post("/bench/send", send_one)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="accept permessage-deflate")
    args = parser.parse_args()
    raise_nofile()
    # No access log: the ceiling does nothing it does not have to.
    web.run_app(
        build_app(deflate=args.deflate), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
