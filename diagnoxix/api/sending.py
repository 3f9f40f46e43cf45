"""The HTTP API under `/v1/`: the seed's stats and test-notification, sending, broadcasts, health.

Per-user endpoints (history, read state, presence, tokens) live in `api.users`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from diagnoxix.api.acks import setup_ack_routes
from diagnoxix.api.common import (
    invalid,
    read_json,
    read_json_object,
    reject_unknown,
    require_api_key,
    store_errors_as_503,
)
from diagnoxix.api.corrections import setup_correction_routes
from diagnoxix.api.critical import is_tracked, send_tracked, setup_critical_routes
from diagnoxix.api.devices import setup_device_routes
from diagnoxix.api.groups import setup_group_routes
from diagnoxix.api.messaging import setup_messaging_routes
from diagnoxix.api.openapi import openapi_document
from diagnoxix.api.preferences import setup_preference_routes
from diagnoxix.api.scheduled import (
    replayed_schedules,
    schedule_sends,
    setup_scheduled_routes,
    split_schedules,
)
from diagnoxix.api.users import setup_user_routes
from diagnoxix.delivery.presence import online_recipients
from diagnoxix.errors import ApiError
from diagnoxix.keys import CLOCK, HUB, PRESENCE, SERVICE, SETTINGS, STARTED_AT, STORE, TIME_ZONES
from diagnoxix.models import ApiKey, Notification
from diagnoxix.process_stats import current_rss_bytes, peak_rss_bytes
from diagnoxix.rules import (
    BATCH_ITEMS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    FieldErrors,
    is_valid_idempotency_key,
    parse_broadcast,
    parse_draft,
)
from diagnoxix.rules.critical import take_requires_ack
from diagnoxix.rules.kinds import parse_item
from diagnoxix.store.protocols import IdempotencyClaim, IdempotencyConflict, StoreError

log = logging.getLogger("diagnoxix.api")


async def _delivery(request: web.Request, note: Notification) -> dict[str, Any]:
    """The notification with its delivery state: "sending" when its user is connected to any
    process (`delivery.presence.online_recipients`)."""
    online = await online_recipients(request.app[PRESENCE], [note])
    body = note.to_api()
    body["delivery"] = note.delivery_state(note.user_id in online)
    return body


# -- the seed's endpoints ------------------------------------------------------------------


async def stats(request: web.Request) -> web.Response:
    """Aggregate counts only: nothing here identifies a patient. Connections and users online
    are counted in every process (`this_process`: the answering one's); the rest are this
    process's."""
    app = request.app
    hub, store = app[HUB], app[STORE]
    counts = await store.counts()
    connections, users_online = await app[PRESENCE].totals()
    rss = current_rss_bytes()
    return web.json_response(
        {
            "status": "ok",
            "connections": connections,
            "users_online": users_online,
            "this_process": {"connections": hub.connection_count, "users_online": hub.user_count},
            "notifications": {
                "stored": counts.stored,
                "delivered": counts.delivered,
                "published": hub.published,
            },
            "send_queue_depth": hub.queued_frames,
            # Resident memory now, and the most it has been since start.
            "rss_kib": rss // 1024 if rss is not None else None,
            "max_rss_kib": peak_rss_bytes() // 1024,
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
        raise invalid(errors)
    # A store that cannot answer is a 503: `store_errors_as_503` wraps every sending route.
    (note,) = await request.app[SERVICE].send([draft])
    request.app[STORE].record_audit(actor, "notification.test", draft.user_id, {"id": note.id})
    log.info("api.test_notification", extra={"id": note.id, "user_id": note.user_id, "type": note.type})
    return web.json_response({"success": True, "notification": await _delivery(request, note)}, status=201)


# -- sending -------------------------------------------------------------------------------


def _parse_send_body(payload: Any) -> tuple[list[Any], bool]:
    """A single notification object, or `{"notifications": [...]}` for a batch.

    A batch over the limit is a 422 like any other rule broken (its code says which): the
    document states the limit as the array's maxItems. 413 is for a body over the byte limit.
    """
    if isinstance(payload, dict) and "notifications" in payload:
        errors = FieldErrors()
        reject_unknown(payload, {"notifications"}, errors)
        items = payload["notifications"]
        if not isinstance(items, list) or not items:
            errors.add("notifications", "must be a non-empty array")
        elif len(items) > BATCH_ITEMS.maximum:
            problem = f"must have at most {BATCH_ITEMS.maximum} notifications (got {len(items)})"
            raise ApiError(422, "batch_too_large", f"notifications {problem}", {"notifications": problem})
        if errors:
            raise invalid(errors)
        return items, True
    return [payload], False


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not is_valid_idempotency_key(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
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
    if record.status == 202:  # it scheduled sends (`deliver_at`): answer with their schedules
        return await replayed_schedules(request, api_key, record.notification_ids, batch)
    notes = await request.app[STORE].get_notifications(record.notification_ids)
    if len(notes) != len(record.notification_ids):
        raise ApiError(
            410,
            "idempotency_key_expired",
            "what this Idempotency-Key stored has expired; send again with a new key",
        )
    return await _send_response(request, notes, batch, replayed=True)


async def _send_response(
    request: web.Request, notes: list[Notification], batch: bool, *, replayed: bool = False
) -> web.Response:
    """201 with the stored notifications, each with its delivery state (its user connected to
    any process or not: one question to presence for the whole batch).

    Assembled from each notification's encoded frame (see `Notification.encode_api`): a batch of
    a thousand would otherwise be turned into a thousand dicts and encoded all over again.
    """
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    online = await online_recipients(request.app[PRESENCE], notes)
    encoded = [n.encode_api(n.delivery_state(n.user_id in online)) for n in notes]
    if batch:
        text = f'{{"count":{len(notes)},"notifications":[{",".join(encoded)}]}}'
    else:
        text = f'{{"notification":{encoded[0]}}}'
    return web.Response(text=text, status=201, headers=headers, content_type="application/json")


async def send_notifications(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    key = _idempotency_key(request)
    payload = await read_json(request)
    items, batch = _parse_send_body(payload)
    request_hash = ""
    if key is not None:
        request_hash = hashlib.sha256(
            json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        replay = await _replayed_response(request, api_key, key, request_hash, batch)
        if replay is not None:
            return replay
    errors = FieldErrors()
    # Items with `deliver_at` are scheduled instead (`api.scheduled`), once validated as a send.
    schedules = split_schedules(items, batch, request.app[CLOCK].now(), errors)
    # `requires_ack`: kept open until a person acknowledges it, like a critical one (`api.critical`).
    acks = [
        take_requires_ack(item, f"notifications[{i}]." if batch else "", errors)
        for i, item in enumerate(schedules.items)
    ]
    # Each item in its own words, or typed (`kind`: the server words it, see `rules.kinds`), with
    # an optional portal link and actions (`rules.links`).
    links = request.app[SERVICE].links
    drafts = [
        parse_item(item, prefix=f"notifications[{i}]." if batch else "", errors=errors, links=links)
        for i, (item, _) in enumerate(acks)
    ]
    if errors:
        raise invalid(errors)
    status = 201 if schedules.times is None else 202
    claim = IdempotencyClaim(api_key.id, key, request_hash, status) if key is not None else None
    valid = [d for d in drafts if d is not None]
    tracked = [is_tracked(d, required) for d, (_, required) in zip(valid, acks, strict=True)]
    # An answer to an action goes back to the key that sent the notification.
    for draft in valid:
        if draft.links is not None:
            draft.links = replace(draft.links, sent_by=api_key.id)
    try:
        if schedules.times is not None:
            # Worded now, in the locale the user has now (a due send is never worded again).
            await request.app[SERVICE].word(valid)
            # A critical one (or `requires_ack`) opens its item when it is due (`delivery.scheduled`).
            required = [r for _, r in acks]
            return await schedule_sends(request, api_key, valid, schedules, batch, claim, required)
        if any(tracked):
            notes = await send_tracked(request, api_key, valid, tracked, key, request_hash, claim)
        else:
            notes = await request.app[SERVICE].send(valid, idempotency=claim)
    except IdempotencyConflict:
        # A concurrent retry with the same key won the race; answer with what it stored.
        assert key is not None
        replay = await _replayed_response(request, api_key, key, request_hash, batch)
        if replay is None:
            raise ApiError(409, "idempotency_conflict", "retry the request") from None
        return replay
    actor = f"apikey:{api_key.id}"
    target = notes[0].user_id if len(notes) == 1 else None
    request.app[STORE].record_audit(
        actor, "notification.send", target, {"count": len(notes), "first_seq": notes[0].seq}
    )
    # Debug only: the access line names the key, the audit log holds the rest (a line costs
    # ~20 µs, a twentieth of a single send's work).
    log.debug("api.send", extra={"api_key": api_key.id, "count": len(notes), "first_seq": notes[0].seq})
    return await _send_response(request, notes, batch)


async def send_broadcast(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    payload = await read_json_object(request)
    errors = FieldErrors()
    draft = parse_broadcast(payload, errors)
    if draft is None:
        raise invalid(errors)
    # A store that cannot answer is a 503: `store_errors_as_503` wraps every sending route.
    (note,) = await request.app[SERVICE].send([draft])
    recipients, _ = await request.app[PRESENCE].totals()  # in every process
    request.app[STORE].record_audit(
        f"apikey:{api_key.id}", "notification.broadcast", None, {"id": note.id, "connections": recipients}
    )
    log.info("api.broadcast", extra={"api_key": api_key.id, "id": note.id, "connections": recipients})
    return web.json_response(
        {"notification": await _delivery(request, note), "connections": recipients}, status=201
    )


async def health(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].check()
    except StoreError:
        raise ApiError(503, "store_unavailable", "the database is not answering") from None
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SETTINGS], request.app[TIME_ZONES].names))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/ws/stats", stats)
    app.router.add_post("/v1/ws/test-notification", store_errors_as_503(test_notification))
    app.router.add_post("/v1/notifications", store_errors_as_503(send_notifications))
    app.router.add_post("/v1/broadcasts", store_errors_as_503(send_broadcast))
    setup_user_routes(app)
    setup_device_routes(app)
    setup_ack_routes(app)
    setup_scheduled_routes(app)
    setup_correction_routes(app)
    setup_preference_routes(app)
    setup_group_routes(app)
    setup_critical_routes(app)
    setup_messaging_routes(app)
    app.router.add_get("/healthz", health)
    app.router.add_get("/v1/openapi.json", openapi)
