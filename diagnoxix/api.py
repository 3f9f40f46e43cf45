"""The HTTP API under `/v1/`: the seed's stats and test-notification, sending, history, tokens."""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
from typing import Any

from aiohttp import web

from .auth import InvalidCredentials
from .errors import ApiError
from .keys import API_KEYS, HUB, SERVICE, SETTINGS, STARTED_AT, STORE, TOKENS
from .models import ApiKey, Notification, format_timestamp
from .openapi import openapi_document
from .store import IdempotencyClaim, IdempotencyConflict, StoreClosed, StoreError
from .validation import (
    MAX_BATCH,
    FieldErrors,
    check_data,
    check_priority,
    check_title_message,
    check_type,
    is_valid_user_id,
    parse_draft,
)

log = logging.getLogger("diagnoxix.api")

# Idempotency keys are opaque client strings (usually UUIDs); bounded so they stay index-friendly.
MAX_IDEMPOTENCY_KEY_CHARS = 255
# History pages: big enough for an inbox screen, small enough for one quick query.
DEFAULT_PAGE = 50
MAX_PAGE = 200


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None


async def require_api_key(request: web.Request) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(401, "api_key_required", "send an API key as Authorization: Bearer <key>")
    try:
        return await request.app[API_KEYS].authenticate(presented.strip())
    except InvalidCredentials as exc:
        raise ApiError(401, "invalid_api_key", str(exc)) from None


def _invalid(errors: FieldErrors) -> ApiError:
    return ApiError(422, "validation_failed", "some fields are invalid", dict(errors.details))


def _delivery(request: web.Request, note: Notification) -> dict[str, Any]:
    body = note.to_api()
    if note.delivered_at is not None:
        body["delivery"] = "delivered"
    elif note.is_broadcast:
        body["delivery"] = "broadcast"
    else:
        online = request.app[HUB].connections_of(note.user_id) > 0
        body["delivery"] = "sending" if online else "queued"
    return body


def _store_unavailable(exc: StoreError) -> ApiError:
    if isinstance(exc, StoreClosed):
        return ApiError(503, "shutting_down", "the server is shutting down; retry shortly")
    return ApiError(503, "store_unavailable", "the notification could not be stored; retry shortly")


# -- the seed's endpoints ------------------------------------------------------------------


async def stats(request: web.Request) -> web.Response:
    """Aggregate counts only: nothing here identifies a patient."""
    app = request.app
    hub, store = app[HUB], app[STORE]
    counts = store.counts()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return web.json_response(
        {
            "status": "ok",
            "connections": hub.connection_count,
            "users_online": hub.user_count,
            "notifications": {
                "stored": counts.stored,
                "delivered": counts.delivered,
                "published": hub.published,
            },
            "send_queue_depth": hub.queued_frames,
            "max_rss_kib": usage.ru_maxrss,
            "uptime_seconds": round(time.time() - app[STARTED_AT], 1),
        }
    )


async def test_notification(request: web.Request) -> web.Response:
    """The seed's test endpoint: open in --dev, an API key otherwise."""
    actor = "dev"
    if not request.app[SETTINGS].dev:
        actor = f"apikey:{(await require_api_key(request)).id}"
    payload = await read_json(request)
    errors = FieldErrors()
    draft = parse_draft(payload, errors=errors, default_type="test_notification")
    if draft is None:
        raise _invalid(errors)
    try:
        (note,) = await request.app[SERVICE].send([draft])
    except StoreError as exc:
        raise _store_unavailable(exc) from None
    request.app[STORE].record_audit(actor, "notification.test", draft.user_id, {"id": note.id})
    log.info("api.test_notification", extra={"id": note.id, "user_id": note.user_id, "type": note.type})
    return web.json_response({"success": True, "notification": _delivery(request, note)}, status=201)


# -- sending -------------------------------------------------------------------------------


def _parse_send_body(payload: Any) -> tuple[list[Any], bool]:
    """A single notification object, or `{"notifications": [...]}` for a batch."""
    if isinstance(payload, dict) and "notifications" in payload:
        if set(payload) != {"notifications"}:
            raise ApiError(422, "validation_failed", "a batch body has only the notifications field")
        items = payload["notifications"]
        if not isinstance(items, list) or not items:
            raise ApiError(422, "validation_failed", "notifications must be a non-empty array")
        if len(items) > MAX_BATCH:
            raise ApiError(
                413, "batch_too_large", f"at most {MAX_BATCH} notifications per request (got {len(items)})"
            )
        return items, True
    return [payload], False


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
        )
    return key


async def _replayed_response(
    request: web.Request, api_key: ApiKey, key: str, request_hash: str, batch: bool
) -> web.Response | None:
    record = await request.app[STORE].get_idempotency(api_key.id, key)
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise ApiError(
            422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
        )
    notes = await request.app[STORE].get_notifications(record.notification_ids)
    return _send_response(request, notes, batch, replayed=True)


def _send_response(
    request: web.Request, notes: list[Notification], batch: bool, *, replayed: bool = False
) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if batch:
        body: dict[str, Any] = {"count": len(notes), "notifications": [_delivery(request, n) for n in notes]}
    else:
        body = {"notification": _delivery(request, notes[0])}
    return web.json_response(body, status=201, headers=headers)


async def send_notifications(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    key = _idempotency_key(request)
    payload = await read_json(request)
    items, batch = _parse_send_body(payload)
    request_hash = hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    if key is not None:
        replay = await _replayed_response(request, api_key, key, request_hash, batch)
        if replay is not None:
            return replay
    errors = FieldErrors()
    drafts = [
        parse_draft(
            item,
            prefix=f"notifications[{i}]." if batch else "",
            errors=errors,
            default_type="notification",
        )
        for i, item in enumerate(items)
    ]
    if errors:
        raise _invalid(errors)
    claim = IdempotencyClaim(api_key.id, key, request_hash, 201) if key is not None else None
    try:
        notes = await request.app[SERVICE].send([d for d in drafts if d is not None], idempotency=claim)
    except IdempotencyConflict:
        # A concurrent retry with the same key won the race; answer with what it stored.
        assert key is not None
        replay = await _replayed_response(request, api_key, key, request_hash, batch)
        if replay is None:
            raise ApiError(409, "idempotency_conflict", "retry the request") from None
        return replay
    except StoreError as exc:
        raise _store_unavailable(exc) from None
    actor = f"apikey:{api_key.id}"
    target = notes[0].user_id if len(notes) == 1 else None
    request.app[STORE].record_audit(
        actor, "notification.send", target, {"count": len(notes), "first_seq": notes[0].seq}
    )
    log.info("api.send", extra={"api_key": api_key.id, "count": len(notes), "first_seq": notes[0].seq})
    return _send_response(request, notes, batch)


async def send_broadcast(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise ApiError(422, "validation_failed", "the body must be a JSON object")
    errors = FieldErrors()
    unknown = sorted(set(payload) - {"title", "message", "data", "type", "priority"})
    for name in unknown:
        errors.add(name, "is not a known field")
    title, message = check_title_message(payload, "", errors)
    check_type(payload.get("type", "system"), "type", errors)
    check_data(payload.get("data"), "data", errors)
    check_priority(payload.get("priority"), "priority", errors)
    if errors:
        raise _invalid(errors)
    try:
        note = await request.app[SERVICE].broadcast_system_notification(
            title,
            message,
            payload.get("data"),
            type=payload.get("type", "system"),
            priority=payload.get("priority") or "normal",
        )
    except StoreError as exc:
        raise _store_unavailable(exc) from None
    recipients = request.app[HUB].connection_count
    request.app[STORE].record_audit(
        f"apikey:{api_key.id}", "notification.broadcast", None, {"id": note.id, "connections": recipients}
    )
    log.info("api.broadcast", extra={"api_key": api_key.id, "id": note.id, "connections": recipients})
    return web.json_response(
        {"notification": _delivery(request, note), "connections": recipients}, status=201
    )


# -- reading -------------------------------------------------------------------------------


def _int_param(request: web.Request, name: str, default: int | None, *, maximum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1 or int(raw) > maximum:
        raise ApiError(400, f"invalid_{name}", f"{name} must be an integer from 1 to {maximum}")
    return int(raw)


async def user_notifications(request: web.Request) -> web.Response:
    await require_api_key(request)
    user_id = request.match_info["user_id"]
    if not is_valid_user_id(user_id):
        raise ApiError(400, "invalid_user_id", "user_id has characters or a length that is not allowed")
    limit = _int_param(request, "limit", DEFAULT_PAGE, maximum=MAX_PAGE)
    before = _int_param(request, "before", None, maximum=2**62)
    assert limit is not None
    notes = await request.app[STORE].history(user_id, before_seq=before, limit=limit)
    next_cursor = str(notes[-1].seq) if len(notes) == limit else None
    return web.json_response({"notifications": [n.to_api() for n in notes], "next_cursor": next_cursor})


async def mint_token(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise ApiError(422, "validation_failed", "the body must be a JSON object")
    errors = FieldErrors()
    for name in sorted(set(payload) - {"user_id", "ttl"}):
        errors.add(name, "is not a known field")
    user_id = payload.get("user_id")
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        errors.add("user_id", "is required: 1-128 characters of letters, digits and . _ : @ -")
    tokens = request.app[TOKENS]
    ttl = payload.get("ttl")
    if ttl is not None and (
        not isinstance(ttl, int) or isinstance(ttl, bool) or not 10 <= ttl <= tokens.max_ttl
    ):
        errors.add("ttl", f"must be an integer from 10 to {tokens.max_ttl} seconds")
    if errors:
        raise _invalid(errors)
    assert isinstance(user_id, str)
    minted = tokens.mint(user_id, ttl)
    request.app[STORE].record_audit(f"apikey:{api_key.id}", "token.mint", user_id, {"ttl": ttl})
    return web.json_response(
        {"token": minted.token, "user_id": user_id, "expires_at": format_timestamp(minted.expires_at)},
        status=201,
    )


async def health(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].check()
    except StoreError:
        raise ApiError(503, "store_unavailable", "the database is not answering") from None
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/ws/stats", stats)
    app.router.add_post("/v1/ws/test-notification", test_notification)
    app.router.add_post("/v1/notifications", send_notifications)
    app.router.add_post("/v1/broadcasts", send_broadcast)
    app.router.add_get("/v1/users/{user_id}/notifications", user_notifications)
    app.router.add_post("/v1/tokens", mint_token)
    app.router.add_get("/healthz", health)
    app.router.add_get("/v1/openapi.json", openapi)
