"""Care groups over HTTP: groups and their members, and sends to a group (docs/critical.md).

Every route takes an API key. A group send opens one critical item (`api.critical`) and gives
each member on duty their own copy of it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from diagnoxix.api.common import invalid, read_json_object, require_api_key, store_errors_as_503
from diagnoxix.api.critical import is_tracked, item_id_for, open_tracked, status_body
from diagnoxix.delivery.presence import online_recipients
from diagnoxix.errors import ApiError
from diagnoxix.keys import PRESENCE, STORE
from diagnoxix.models import format_timestamp
from diagnoxix.rules import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    USER_ID_SHAPE,
    FieldErrors,
    is_valid_idempotency_key,
    is_valid_user_id,
)
from diagnoxix.rules.critical import is_group_name, parse_on_duty, take_requires_ack
from diagnoxix.rules.kinds import parse_item

# What stands for the recipient while a group send is checked (each member gets their own copy).
_MEMBER = "group-member"


def _group(request: web.Request) -> str:
    name = request.match_info["group"]
    if not is_group_name(name):
        raise ApiError(400, "invalid_group", "a group name is 1-64 letters, digits and . _ : @ -")
    return name


def _group_not_found() -> ApiError:
    return ApiError(404, "group_not_found", "no group with that name")


async def list_groups(request: web.Request) -> web.Response:
    await require_api_key(request)
    groups = await request.app[STORE].list_groups()
    return web.json_response(
        {
            "groups": [
                {
                    "group": g.name,
                    "created_at": format_timestamp(g.created_at),
                    "members": g.members,
                    "on_duty": g.on_duty,
                }
                for g in groups
            ]
        }
    )


async def get_group(request: web.Request) -> web.Response:
    await require_api_key(request)
    name = _group(request)
    members = await request.app[STORE].group_members(name)
    if members is None:
        raise _group_not_found()
    return web.json_response(
        {
            "group": name,
            "members": [
                {"user_id": m.user_id, "on_duty": m.on_duty, "added_at": format_timestamp(m.added_at)}
                for m in members
            ],
        }
    )


async def put_group(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    name = _group(request)
    created = await request.app[STORE].put_group(name)
    if created:
        request.app[STORE].record_audit(f"apikey:{api_key.id}", "group.create", name)
    return web.json_response({"group": name, "created": created}, status=201 if created else 200)


async def delete_group(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    name = _group(request)
    if not await request.app[STORE].delete_group(name):
        raise _group_not_found()
    request.app[STORE].record_audit(f"apikey:{api_key.id}", "group.delete", name)
    return web.json_response({"group": name, "deleted": True})


def _member(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if not is_valid_user_id(user_id):
        raise ApiError(400, "invalid_user_id", f"user_id must be {USER_ID_SHAPE}")
    return user_id


async def put_member(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    name, user_id = _group(request), _member(request)
    errors = FieldErrors()
    on_duty = parse_on_duty(await read_json_object(request), errors)
    if errors:
        raise invalid(errors)
    if not await request.app[STORE].set_group_member(name, user_id, on_duty):
        raise _group_not_found()
    request.app[STORE].record_audit(
        f"apikey:{api_key.id}", "group.member", user_id, {"group": name, "on_duty": on_duty}
    )
    return web.json_response({"group": name, "user_id": user_id, "on_duty": on_duty})


async def delete_member(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    name, user_id = _group(request), _member(request)
    if not await request.app[STORE].remove_group_member(name, user_id):
        raise ApiError(404, "member_not_found", "no such member of that group")
    request.app[STORE].record_audit(f"apikey:{api_key.id}", "group.member_removed", user_id, {"group": name})
    return web.json_response({"group": name, "user_id": user_id, "removed": True})


def _request_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def send_to_group(request: web.Request) -> web.Response:
    """Each member on duty gets their own copy, tied together by the item's id."""
    api_key = await require_api_key(request)
    name = _group(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not is_valid_idempotency_key(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
        )
    payload = await read_json_object(request)
    errors = FieldErrors()
    for field in ("user_id", "kind"):
        if field in payload:
            errors.add(
                field, "is not a field of a group send (in your own words; each member on duty gets a copy)"
            )
    item, requires_ack = take_requires_ack(payload, "", errors)
    assert isinstance(item, dict)
    draft = parse_item({**item, "user_id": _MEMBER}, errors=errors)
    if errors or draft is None:
        raise invalid(errors)
    members = await request.app[STORE].group_members(name)
    if members is None:
        raise _group_not_found()
    if not any(m.on_duty for m in members):
        raise ApiError(409, "nobody_on_duty", "no member of this group is on duty")
    tracked = is_tracked(draft, requires_ack)
    request_hash = _request_hash(payload)
    found, notes, replayed = await open_tracked(
        request,
        api_key,
        draft,
        target=f"group:{name}",
        requires_ack=tracked,
        item_id=item_id_for(api_key, key),
        request_hash=request_hash,
    )
    online = await online_recipients(request.app[PRESENCE], notes)  # in any process
    body = {
        "critical": await status_body(request, found),
        "notifications": [n.to_api() | {"delivery": n.delivery_state(n.user_id in online)} for n in notes],
    }
    return web.json_response(body, status=201, headers={"Idempotent-Replayed": "true"} if replayed else None)


def setup_group_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/groups", store_errors_as_503(list_groups))
    router.add_get("/v1/groups/{group}", store_errors_as_503(get_group))
    router.add_put("/v1/groups/{group}", store_errors_as_503(put_group))
    router.add_delete("/v1/groups/{group}", store_errors_as_503(delete_group))
    router.add_put("/v1/groups/{group}/members/{user_id}", store_errors_as_503(put_member))
    router.add_delete("/v1/groups/{group}/members/{user_id}", store_errors_as_503(delete_member))
    router.add_post("/v1/groups/{group}/notifications", store_errors_as_503(send_to_group))
