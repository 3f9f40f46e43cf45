"""Revoking a user's devices from the user's page (admins).

Unlike "disconnect", which only closes the sockets open now (the client may reconnect with the
same token at once), revoking refuses the token from then on, in every process, and closes its
sockets with 4003: only a newly minted token can connect again.
"""

from __future__ import annotations

import logging

from aiohttp import web

from diagnoxix.dashboard.pages_users import user_id_of
from diagnoxix.dashboard.sessions import checked_form, require_admin
from diagnoxix.delivery.revocations import revoke_devices
from diagnoxix.keys import BROKER, STORE
from diagnoxix.rules import is_valid_token_id

log = logging.getLogger("diagnoxix.dashboard")


async def revoke_device(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    await checked_form(request, staff)
    user_id = user_id_of(request)
    token_id = request.match_info["token_id"]
    store = request.config_dict[STORE]
    if not is_valid_token_id(token_id) or await store.find_device(user_id, token_id) is None:
        raise web.HTTPNotFound(reason="this user has no device with that token id")
    count = await revoke_devices(store, request.config_dict[BROKER], user_id, token_id, actor=staff.actor)
    log.info("dashboard.device_revoke", extra={"username": staff.username, "user_id": user_id})
    raise web.HTTPSeeOther(f"/dashboard/users/{user_id}?revoked={count}")


async def revoke_all_devices(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    await checked_form(request, staff)
    user_id = user_id_of(request)
    store = request.config_dict[STORE]
    count = await revoke_devices(store, request.config_dict[BROKER], user_id, None, actor=staff.actor)
    log.info("dashboard.device_revoke_all", extra={"username": staff.username, "user_id": user_id})
    raise web.HTTPSeeOther(f"/dashboard/users/{user_id}?revoked={count}")
