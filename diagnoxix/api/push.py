"""Web Push over HTTP: the server's VAPID public key, a user's push subscriptions (register, list,
delete), and one notification read by its id (what the service worker fetches when a push
arrives: a push itself carries only a generic title and the id; docs/channels.md).

A service's API key may do this for any user; a user's own token for that user only (403 for
another's). Registrations and removals are audited with the subscription's id and the push
service's host, never the endpoint or keys (whoever holds them can push to that browser).
"""

from __future__ import annotations

from aiohttp import web

from diagnoxix.api.common import authorize_user, invalid, read_json_object, store_errors_as_503
from diagnoxix.delivery.push.router import PUSH_SUBSCRIBED
from diagnoxix.edge.clients import stored_user_agent
from diagnoxix.errors import ApiError
from diagnoxix.keys import BROKER, PUSH, SETTINGS, STORE
from diagnoxix.models import BROADCAST_RECIPIENT
from diagnoxix.rules import FieldErrors
from diagnoxix.rules.corrections import is_notification_id
from diagnoxix.rules.push import SUBSCRIPTION_ID_REGEX, check_subscription, is_subscription_id
from diagnoxix.store.push_records import NewPushSubscription


async def public_key(request: web.Request) -> web.Response:
    """What a browser subscribes with (`applicationServerKey`): public, the same for everyone."""
    return web.json_response({"public_key": request.app[PUSH].public_key, "content_encoding": "aes128gcm"})


async def list_subscriptions(request: web.Request) -> web.Response:
    user_id, _ = await authorize_user(request)
    subs = await request.app[STORE].list_push_subscriptions(user_id)
    return web.json_response({"user_id": user_id, "subscriptions": [s.to_api() for s in subs]})


async def add_subscription(request: web.Request) -> web.Response:
    user_id, actor = await authorize_user(request)
    payload = await read_json_object(request)
    settings = request.app[SETTINGS]
    errors = FieldErrors()
    checked = check_subscription(
        payload, errors, hosts=settings.push_hosts, allow_http_loopback=settings.push_allow_loopback
    )
    if errors or checked is None:
        raise invalid(errors)
    # Kept to tell a user's subscriptions apart.
    agent = stored_user_agent(request)
    store = request.app[STORE]
    sub = await store.add_push_subscription(
        NewPushSubscription(user_id, checked.endpoint, checked.p256dh, checked.auth, checked.host, agent),
        limit=settings.push_subscriptions_per_user,
    )
    # This process's router at once; every other process's through the broker.
    request.app[PUSH].router.subscribed.add(user_id)
    request.app[BROKER].announce(PUSH_SUBSCRIBED, user_id)
    store.record_audit(actor, "push.subscribed", user_id, {"subscription_id": sub.id, "host": sub.host})
    return web.json_response({"subscription": sub.to_api()}, status=201)


async def delete_subscription(request: web.Request) -> web.Response:
    user_id, actor = await authorize_user(request)
    subscription_id = request.match_info["subscription_id"]
    if not is_subscription_id(subscription_id):
        raise ApiError(400, "invalid_subscription_id", f"subscription_id must match {SUBSCRIPTION_ID_REGEX}")
    store = request.app[STORE]
    if not await store.delete_push_subscription(user_id, subscription_id):
        raise ApiError(404, "subscription_not_found", "this user has no push subscription with that id")
    store.record_audit(actor, "push.unsubscribed", user_id, {"subscription_id": subscription_id})
    return web.json_response({"subscription_id": subscription_id, "deleted": True})


async def one_notification(request: web.Request) -> web.Response:
    """One of the user's notifications (or a broadcast) by id; another's, a retracted or an
    expired one is a 404 alike."""
    user_id, _ = await authorize_user(request)
    notification_id = request.match_info["notification_id"]
    if not is_notification_id(notification_id):
        raise ApiError(400, "invalid_notification_id", "notification_id is not an id")
    notes = await request.app[STORE].get_notifications([notification_id])
    if not notes or notes[0].user_id not in (user_id, BROADCAST_RECIPIENT):
        raise ApiError(404, "notification_not_found", "this user has no notification with that id")
    return web.json_response({"notification": notes[0].to_api()})


def setup_push_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/push/public-key", public_key)
    router.add_get("/v1/users/{user_id}/push-subscriptions", store_errors_as_503(list_subscriptions))
    router.add_post("/v1/users/{user_id}/push-subscriptions", store_errors_as_503(add_subscription))
    router.add_delete(
        "/v1/users/{user_id}/push-subscriptions/{subscription_id}", store_errors_as_503(delete_subscription)
    )
    router.add_get(
        "/v1/users/{user_id}/notifications/{notification_id}", store_errors_as_503(one_notification)
    )
