"""What every HTTP handler shares: JSON bodies, credentials, parameter parsing, error mapping."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from diagnoxix.auth import API_KEY_PREFIX, InvalidCredentials
from diagnoxix.edge.bodies import read_body
from diagnoxix.errors import ApiError
from diagnoxix.json_encoding import DuplicateKey, decode_json
from diagnoxix.keys import API_KEYS, LIMITS, SETTINGS, TOKENS
from diagnoxix.logs import ACCESS_API_KEY
from diagnoxix.models import ApiKey
from diagnoxix.rules import READ_IDS, USER_ID_SHAPE, Bounds, FieldErrors, ids_problem, is_valid_user_id
from diagnoxix.store.protocols import StoreClosed, StoreError


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    raw = await read_body(request, request.app[SETTINGS].http_header_timeout_seconds)
    try:
        return decode_json(raw)
    except DuplicateKey:
        raise ApiError(400, "duplicate_key", "a JSON object in the body names the same key twice") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise ApiError(422, "validation_failed", "the body must be a JSON object")
    return payload


def _bearer(request: web.Request) -> str | None:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    return presented if scheme.lower() == "bearer" and presented else None


async def require_api_key(request: web.Request) -> ApiKey:
    presented = _bearer(request)
    if presented is None:
        raise ApiError(401, "api_key_required", "send an API key as Authorization: Bearer <key>")
    try:
        api_key = await request.app[API_KEYS].authenticate(presented)
    except InvalidCredentials as exc:
        raise ApiError(401, "invalid_api_key", str(exc)) from None
    await request.app[LIMITS].api_key_request(api_key.id)
    request[ACCESS_API_KEY] = api_key.id
    return api_key


async def authorize_user(request: web.Request) -> tuple[str, str]:
    """The path's user id and the actor: a service's API key (any user) or that user's own
    connection token.

    Credentials are checked before anything else of the request, so a caller without them learns
    nothing (401) about what it sent. A patient's token opens only their own notifications: user A
    never reads user B's (403, whatever the path holds).
    """
    presented = _bearer(request)
    if presented is None:
        raise ApiError(
            401, "credentials_required", "send an API key or the user's connection token as Bearer"
        )
    if presented.startswith(f"{API_KEY_PREFIX}_"):
        actor = f"apikey:{(await require_api_key(request)).id}"
        return path_user_id(request), actor
    try:
        verified = request.app[TOKENS].verify(presented)
    except InvalidCredentials as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None
    if verified.user_id != request.match_info["user_id"]:
        raise ApiError(403, "forbidden", "this token belongs to another user")
    return verified.user_id, f"user:{verified.user_id}"


def path_user_id(request: web.Request) -> str:
    """The path's user id, for a caller already authenticated."""
    user_id = request.match_info["user_id"]
    if not is_valid_user_id(user_id):
        raise ApiError(400, "invalid_user_id", f"user_id must be {USER_ID_SHAPE}")
    return user_id


def int_param(request: web.Request, name: str, default: int | None, bounds: Bounds) -> int | None:
    """An integer query parameter within `bounds`; absent or empty is the default."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = bounds.parse(raw)
    if value is None:
        raise ApiError(400, f"invalid_{name}", f"{name} must be {bounds.text}")
    return value


def invalid(errors: FieldErrors) -> ApiError:
    return ApiError(422, "validation_failed", "some fields are invalid", dict(errors.details))


def store_unavailable(exc: StoreError) -> ApiError:
    retry = {"Retry-After": "5"}
    if isinstance(exc, StoreClosed):
        return ApiError(503, "shutting_down", "the server is shutting down; retry shortly", headers=retry)
    return ApiError(
        503, "store_unavailable", "the notification could not be stored; retry shortly", headers=retry
    )


def store_errors_as_503(handler: Handler) -> Handler:
    """The handler, with a store that cannot answer (shutting down, busy) turned into a 503.

    Every API route reads or writes the store, if only to check an API key, and a database
    hiccup is the server's to retry later, never a 500.
    """

    @functools.wraps(handler)
    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreError as exc:
            raise store_unavailable(exc) from None

    return answered


async def read_ids(request: web.Request) -> list[str]:
    """A body `{"ids": [...]}` of notification ids (marks read, acknowledgements); 422 otherwise."""
    payload = await read_json_object(request)
    errors = FieldErrors()
    reject_unknown(payload, {"ids"}, errors)
    ids = payload.get("ids")
    if (problem := ids_problem(ids, READ_IDS)) is not None:
        errors.add("ids", problem)
    if errors:
        raise invalid(errors)
    assert isinstance(ids, list)
    return ids


def reject_unknown(payload: dict[str, Any], known: set[str], errors: FieldErrors) -> None:
    for name in sorted(set(payload) - known):
        errors.add(name, "is not a known field")
