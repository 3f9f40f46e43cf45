"""A user's devices (one per minted connection token): list them, revoke one or all.

A service's API key may do this for any user; a user's own token for that user only (403 for
another's). Revoking is durable before it is answered, reaches every process through the broker
(their revoked lists and sockets: close code 4003), and is audited with the token ids, never a
token.
"""

from __future__ import annotations

from aiohttp import web

from diagnoxix.api.common import authorize_user, store_errors_as_503
from diagnoxix.delivery.revocations import revoke_devices
from diagnoxix.errors import ApiError
from diagnoxix.keys import BROKER, STORE
from diagnoxix.rules import MAX_DEVICES_LISTED, TOKEN_ID_REGEX, is_valid_token_id


def _token_id(request: web.Request) -> str:
    token_id = request.match_info["token_id"]
    if not is_valid_token_id(token_id):
        raise ApiError(400, "invalid_token_id", f"token_id must match {TOKEN_ID_REGEX}")
    return token_id


async def list_devices(request: web.Request) -> web.Response:
    user_id, _ = await authorize_user(request)
    devices = await request.app[STORE].list_devices(user_id, limit=MAX_DEVICES_LISTED)
    return web.json_response({"user_id": user_id, "devices": [d.to_api() for d in devices]})


async def revoke_device(request: web.Request) -> web.Response:
    user_id, actor = await authorize_user(request)
    token_id = _token_id(request)
    store = request.app[STORE]
    if await store.find_device(user_id, token_id) is None:
        raise ApiError(404, "device_not_found", "this user has no device with that token id")
    count = await revoke_devices(store, request.app[BROKER], user_id, token_id, actor=actor)
    device = await store.find_device(user_id, token_id)
    if device is None:  # purged in between: its token has expired
        raise ApiError(404, "device_not_found", "this user has no device with that token id")
    return web.json_response({"device": device.to_api(), "revoked": count > 0})


async def revoke_all_devices(request: web.Request) -> web.Response:
    user_id, actor = await authorize_user(request)
    count = await revoke_devices(request.app[STORE], request.app[BROKER], user_id, None, actor=actor)
    return web.json_response({"user_id": user_id, "revoked": count})


def setup_device_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/users/{user_id}/devices", store_errors_as_503(list_devices))
    router.add_delete("/v1/users/{user_id}/devices", store_errors_as_503(revoke_all_devices))
    router.add_delete("/v1/users/{user_id}/devices/{token_id}", store_errors_as_503(revoke_device))
