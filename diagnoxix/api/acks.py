"""`POST /v1/users/{user_id}/notifications/ack`: the WebSocket's `ack` frame as an HTTP call.

For clients that receive over the SSE fallback (ws/sse.py), which cannot send frames: they
acknowledge what they delivered to the app here, with the user's token (or a service's API key),
and read marks go to `/read` and `/read-all` (api/users.py). An acknowledged notification counts
as delivered; one left unacknowledged comes again to a client that connects without a cursor.
Another user's ids are ignored, never confirmed.
"""

from __future__ import annotations

from aiohttp import web

from diagnoxix.api.common import authorize_user, read_ids, store_errors_as_503
from diagnoxix.keys import STORE

ACK_PATH = "/v1/users/{user_id}/notifications/ack"


async def acknowledge(request: web.Request) -> web.Response:
    user_id, _ = await authorize_user(request)
    ids = await read_ids(request)
    return web.json_response({"ids": await request.app[STORE].acknowledge(user_id, ids)})


def setup_ack_routes(app: web.Application) -> None:
    app.router.add_post(ACK_PATH, store_errors_as_503(acknowledge))
