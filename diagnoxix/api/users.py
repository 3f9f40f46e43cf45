"""Per-user HTTP endpoints: history, read state, unread count, presence, connection tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from diagnoxix.api.common import (
    authorize_user,
    int_param,
    invalid,
    path_user_id,
    read_ids,
    read_json_object,
    reject_unknown,
    require_api_key,
    store_errors_as_503,
)
from diagnoxix.auth import mint_device_token
from diagnoxix.errors import ApiError
from diagnoxix.keys import PRESENCE, SERVICE, STORE, TOKENS
from diagnoxix.models import format_timestamp
from diagnoxix.rules import (
    CURSOR_SEQ,
    DEFAULT_HISTORY_PAGE,
    DEFAULT_PRESENCE_PAGE,
    HISTORY_PAGE,
    PRESENCE_PAGE,
    FieldErrors,
    check_user_id,
    is_type_name,
    next_cursor,
    token_ttl_seconds,
)


async def user_notifications(request: web.Request) -> web.Response:
    """Newest first, cursor-paginated (`next_cursor` is an integer seq, as over the socket);
    `type=` and `unread=true` filter."""
    user_id, _ = await authorize_user(request)
    limit = int_param(request, "limit", DEFAULT_HISTORY_PAGE, HISTORY_PAGE)
    before = int_param(request, "before", None, CURSOR_SEQ)
    kind = request.query.get("type")
    if kind is not None and not is_type_name(kind):
        raise ApiError(400, "invalid_type", "type must be a notification type")
    unread = request.query.get("unread", "false").lower()
    if unread not in {"true", "false"}:
        raise ApiError(400, "invalid_unread", "unread must be true or false")
    assert limit is not None
    notes = await request.app[STORE].history(
        user_id, before_seq=before, limit=limit, type=kind, unread_only=unread == "true"
    )
    return web.json_response(
        {"notifications": [n.to_api() for n in notes], "next_cursor": next_cursor(notes, limit)}
    )


async def mark_read(request: web.Request) -> web.Response:
    user_id, actor = await authorize_user(request)
    ids = await read_ids(request)
    marked, unread = await request.app[SERVICE].mark_read(user_id, ids)
    request.app[STORE].record_audit(actor, "notification.read", user_id, {"count": len(marked)})
    return web.json_response({"ids": marked, "unread": unread})


async def mark_all_read(request: web.Request) -> web.Response:
    user_id, actor = await authorize_user(request)
    changed, unread = await request.app[SERVICE].mark_all_read(user_id)
    request.app[STORE].record_audit(actor, "notification.read_all", user_id, {"count": changed})
    return web.json_response({"count": changed, "unread": unread})


async def unread_count(request: web.Request) -> web.Response:
    user_id, _ = await authorize_user(request)
    return web.json_response({"user_id": user_id, "unread": await request.app[STORE].unread_count(user_id)})


def _since(at: float | None) -> str | None:
    return format_timestamp(datetime.fromtimestamp(at, UTC)) if at is not None else None


async def presence(request: web.Request) -> web.Response:
    """Who is online now, and since when (services and staff only)."""
    await require_api_key(request)
    limit = int_param(request, "limit", DEFAULT_PRESENCE_PAGE, PRESENCE_PAGE)
    rows = await request.app[PRESENCE].online_users()
    users: list[dict[str, Any]] = [
        {"user_id": user, "connections": count, "since": _since(since)} for user, count, since in rows[:limit]
    ]
    return web.json_response({"online": len(rows), "users": users})


async def user_presence(request: web.Request) -> web.Response:
    await require_api_key(request)
    user_id = path_user_id(request)
    count, since = await request.app[PRESENCE].user(user_id)
    return web.json_response(
        {"user_id": user_id, "online": count > 0, "connections": count, "since": _since(since)}
    )


async def mint_token(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    payload = await read_json_object(request)
    errors = FieldErrors()
    reject_unknown(payload, {"user_id", "ttl"}, errors)
    user_id = check_user_id(payload.get("user_id"), "user_id", errors)
    tokens = request.app[TOKENS]
    lifetime = token_ttl_seconds(tokens.max_ttl)
    ttl = payload.get("ttl")
    if ttl is not None and (ttl := lifetime.integer(ttl)) is None:
        errors.add("ttl", f"must be {lifetime.text} seconds")
    if errors:
        raise invalid(errors)
    store = request.app[STORE]
    minted = await mint_device_token(tokens, store, user_id, ttl)
    store.record_audit(
        f"apikey:{api_key.id}", "token.mint", user_id, {"ttl": ttl, "token_id": minted.token_id}
    )
    return web.json_response(
        {
            "token": minted.token,
            "user_id": user_id,
            "expires_at": format_timestamp(minted.expires_at),
            "token_id": minted.token_id,
        },
        status=201,
    )


def setup_user_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/users/{user_id}/notifications", store_errors_as_503(user_notifications))
    router.add_post("/v1/users/{user_id}/notifications/read", store_errors_as_503(mark_read))
    router.add_post("/v1/users/{user_id}/notifications/read-all", store_errors_as_503(mark_all_read))
    router.add_get("/v1/users/{user_id}/unread-count", store_errors_as_503(unread_count))
    router.add_get("/v1/users/{user_id}/presence", store_errors_as_503(user_presence))
    router.add_get("/v1/presence", store_errors_as_503(presence))
    router.add_post("/v1/tokens", store_errors_as_503(mint_token))
