"""API keys for backend services: create (the secret is shown once), list, revoke. Admins only."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from diagnoxix.dashboard.inputs import path_id
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import Staff, checked_form, require_admin
from diagnoxix.keys import API_KEYS, STORE
from diagnoxix.rules import MAX_API_KEY_NAME_CHARS, is_valid_api_key_name

log = logging.getLogger("diagnoxix.dashboard")


async def _page(request: web.Request, staff: Staff, extra: dict[str, Any], status: int = 200) -> web.Response:
    keys = await request.config_dict[STORE].list_api_keys()
    context = {"keys": keys, "errors": {}, "name": "", **extra}
    return await render(request, "keys.html", context, staff=staff, status=status)


async def keys_page(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    return await _page(request, staff, {"revoked": request.query.get("revoked")})


async def create_key(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    form = await checked_form(request, staff)
    name = form.get("name", "").strip()
    if not is_valid_api_key_name(name):
        error = {
            "name": f"give the key a name of 1-{MAX_API_KEY_NAME_CHARS} printable characters (who uses it)"
        }
        return await _page(request, staff, {"errors": error, "name": name}, status=422)
    key, secret = await request.config_dict[API_KEYS].create(name)
    request.config_dict[STORE].record_audit(staff.actor, "apikey.create", key.id, {"name": name})
    log.info("dashboard.apikey_create", extra={"username": staff.username, "key_id": key.id})
    # Rendered in the POST's own response (never stored, never redirected to): shown this once.
    return await _page(request, staff, {"created": key, "secret": secret}, status=201)


async def revoke_key(request: web.Request) -> web.StreamResponse:
    staff = await require_admin(request)
    await checked_form(request, staff)
    key_id = path_id(request, "key_id", "no active API key with that id")
    if not await request.config_dict[API_KEYS].revoke(key_id):
        raise web.HTTPNotFound(reason="no active API key with that id")
    request.config_dict[STORE].record_audit(staff.actor, "apikey.revoke", key_id)
    log.info("dashboard.apikey_revoke", extra={"username": staff.username, "key_id": key_id})
    raise web.HTTPSeeOther(f"/dashboard/keys?revoked={key_id}")
