"""Messaging over HTTP: a user's locale, and a user's answer to a notification's action.

- `GET|PUT /v1/users/{user_id}/locale` (a service's API key, or the user's own token): the
  language the user's typed notifications are worded in (`{"locale": null}`: the default again).
- `POST /v1/notifications/{id}/actions/{action}` (the user's own token only: an answer is the
  patient's): records the answer once and hands it to the sender's webhook (`delivery.actions`).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from diagnoxix.api.common import (
    authorize_user,
    invalid,
    read_json_object,
    reject_unknown,
    store_errors_as_503,
)
from diagnoxix.auth import API_KEY_PREFIX, InvalidCredentials
from diagnoxix.delivery.actions import AlreadyAnswered, NotAnswerable
from diagnoxix.errors import ApiError
from diagnoxix.keys import ACTIONS, STORE, TEMPLATES, TOKENS
from diagnoxix.models import format_timestamp
from diagnoxix.rules import FieldErrors
from diagnoxix.rules.corrections import is_notification_id
from diagnoxix.rules.links import ACTION_NAME_REGEX, is_action_name
from diagnoxix.rules.locales import locale_problem
from diagnoxix.store.messaging_records import ActionAnswer

log = logging.getLogger("diagnoxix.api")


def _locale_body(request: web.Request, user_id: str, locale: str | None) -> dict[str, Any]:
    return {"user_id": user_id, "locale": locale, "default_locale": request.app[TEMPLATES].default_locale}


async def get_locale(request: web.Request) -> web.Response:
    user_id, _ = await authorize_user(request)
    found = await request.app[STORE].user_locales([user_id])
    return web.json_response(_locale_body(request, user_id, found.get(user_id)))


async def put_locale(request: web.Request) -> web.Response:
    user_id, actor = await authorize_user(request)
    payload = await read_json_object(request)
    errors = FieldErrors()
    reject_unknown(payload, {"locale"}, errors)
    if "locale" not in payload:
        errors.add("locale", "is required (null: the server's default)")
    elif (problem := locale_problem(payload["locale"])) is not None:
        errors.add("locale", problem)
    if errors:
        raise invalid(errors)
    locale: str | None = payload["locale"]
    store = request.app[STORE]
    await store.set_user_locale(user_id, locale)
    store.record_audit(actor, "user.locale", user_id, {"locale": locale})
    return web.json_response(_locale_body(request, user_id, locale))


def _answer_body(answer: ActionAnswer) -> dict[str, Any]:
    return {
        "id": answer.notification_id,
        "user_id": answer.user_id,
        "action": answer.action,
        "answered_at": format_timestamp(answer.answered_at),
        "recorded": answer.recorded,
    }


async def _answering_user(request: web.Request) -> str:
    """The user whose own connection token the request carries (an API key may not answer)."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(401, "credentials_required", "send the user's connection token as Bearer")
    if presented.startswith(f"{API_KEY_PREFIX}_"):
        raise ApiError(403, "forbidden", "an action is answered by its user, with their own token")
    try:
        return request.app[TOKENS].verify(presented).user_id
    except InvalidCredentials as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None


async def answer_action(request: web.Request) -> web.Response:
    user_id = await _answering_user(request)
    notification_id = request.match_info["notification_id"]
    action = request.match_info["action"]
    if not is_notification_id(notification_id):
        raise ApiError(400, "invalid_notification_id", "the path must name a notification id")
    if not is_action_name(action):
        raise ApiError(400, "invalid_action", f"the action must match {ACTION_NAME_REGEX}")
    try:
        answer = await request.app[ACTIONS].answer(user_id, notification_id, action)
    except NotAnswerable:
        raise ApiError(
            404, "action_not_found", "no such action on a notification of yours (or it has expired)"
        ) from None
    except AlreadyAnswered as exc:
        raise ApiError(
            409,
            "already_answered",
            "the notification was answered already, with another action",
            {"answer": _answer_body(exc.first)},
        ) from None
    if answer.recorded:
        request.app[STORE].record_audit(
            f"user:{user_id}", "notification.action", user_id, {"id": notification_id, "action": action}
        )
        log.info("api.action", extra={"id": notification_id, "action": action})
    return web.json_response(_answer_body(answer))


def setup_messaging_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/users/{user_id}/locale", store_errors_as_503(get_locale))
    router.add_put("/v1/users/{user_id}/locale", store_errors_as_503(put_locale))
    router.add_post(
        "/v1/notifications/{notification_id}/actions/{action}", store_errors_as_503(answer_action)
    )
