"""A user's channel preferences over HTTP: `GET`, `PUT` and `DELETE /v1/users/{user_id}/preferences`.

With the user's own connection token (a patient's portal page, through the browser SDK) or a
service's API key. Which channels beyond the socket the user wants per category, and quiet hours in
their time zone; critical notifications ignore both (`rules.preferences`).
"""

from __future__ import annotations

from aiohttp import web

from diagnoxix.api.common import authorize_user, invalid, read_json_object, store_errors_as_503
from diagnoxix.keys import SETTINGS, STORE, TIME_ZONES
from diagnoxix.rules import FieldErrors
from diagnoxix.rules.preferences import DEFAULTS, parse_preferences, to_api


async def get_preferences(request: web.Request) -> web.Response:
    user_id, _ = await authorize_user(request)
    prefs = await request.app[STORE].get_preferences(user_id)
    return web.json_response(to_api(prefs or DEFAULTS, request.app[SETTINGS].critical_categories))


async def put_preferences(request: web.Request) -> web.Response:
    """Replace them whole: what the body leaves out is the default."""
    user_id, actor = await authorize_user(request)
    payload = await read_json_object(request)
    critical = request.app[SETTINGS].critical_categories
    zones = request.app[TIME_ZONES]
    errors = FieldErrors()
    prefs = parse_preferences(payload, errors, critical_categories=critical, time_zones=zones)
    if prefs is None:
        raise invalid(errors)
    store = request.app[STORE]
    await store.put_preferences(user_id, prefs)
    store.record_audit(actor, "preferences.update", user_id, {"categories": len(prefs.channels)})
    return web.json_response(to_api(prefs, critical))


async def delete_preferences(request: web.Request) -> web.Response:
    """Back to the defaults: every channel, no quiet hours."""
    user_id, actor = await authorize_user(request)
    store = request.app[STORE]
    if await store.delete_preferences(user_id):
        store.record_audit(actor, "preferences.reset", user_id)
    return web.json_response(to_api(DEFAULTS, request.app[SETTINGS].critical_categories))


def setup_preference_routes(app: web.Application) -> None:
    path = "/v1/users/{user_id}/preferences"
    app.router.add_get(path, store_errors_as_503(get_preferences))
    app.router.add_put(path, store_errors_as_503(put_preferences))
    app.router.add_delete(path, store_errors_as_503(delete_preferences))
