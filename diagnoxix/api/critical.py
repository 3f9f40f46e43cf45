"""Critical results over HTTP: tracked items and their sends, acknowledgements, status,
escalation policies (docs/critical.md). Care groups and group sends are in `api.groups`.

Status and policies take an API key. A personal acknowledgement takes the recipient's own
connection token (their device is recorded); an API key acknowledges on behalf, with a required
reason. Every step is in the item's timeline (`critical_events`), never its words.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web

from diagnoxix.api.common import invalid, read_json_object, require_api_key, store_errors_as_503
from diagnoxix.auth import API_KEY_PREFIX, InvalidCredentials
from diagnoxix.delivery.critical import CriticalService
from diagnoxix.errors import ApiError
from diagnoxix.keys import CRITICAL, SERVICE, STORE, TOKENS
from diagnoxix.models import ApiKey, Notification, NotificationDraft, format_timestamp
from diagnoxix.rules import FieldErrors
from diagnoxix.rules.corrections import is_notification_id
from diagnoxix.rules.critical import parse_on_behalf
from diagnoxix.store.critical_records import (
    Acknowledgement,
    CriticalCopy,
    CriticalEvent,
    CriticalItem,
    CriticalItemExists,
)
from diagnoxix.store.protocols import IdempotencyClaim

log = logging.getLogger("diagnoxix.api")

# Item ids made from an Idempotency-Key: a retry finds the item its first attempt opened.
_ITEM_IDS = uuid.UUID("6f1d0c8e-3b7a-4c52-9e1f-2a4d8b6c0e93")


def item_id_for(api_key: ApiKey, key: str | None, index: int = 0) -> str | None:
    return str(uuid.uuid5(_ITEM_IDS, f"{api_key.id}\n{key}\n{index}")) if key is not None else None


def is_tracked(draft: NotificationDraft, requires_ack: bool) -> bool:
    """A critical notification, or one its sender wants acknowledged, stays open until it is."""
    return requires_ack or draft.priority == "critical"


def _stamp(value: Any) -> str | None:
    return format_timestamp(value) if value is not None else None


def _copy(copy: CriticalCopy) -> dict[str, Any]:
    return {
        "user_id": copy.user_id,
        "notification_id": copy.notification_id,
        "step": copy.step,
        "delivered_at": _stamp(copy.delivered_at),
        "read_at": _stamp(copy.read_at),
    }


def item_body(item: CriticalItem, copies: list[CriticalCopy]) -> dict[str, Any]:
    return {
        "critical_id": item.id,
        "state": item.state,
        "requires_ack": item.requires_ack,
        "target": item.target,
        "type": item.type,
        "priority": item.priority,
        "policy": item.policy,
        "created_at": format_timestamp(item.created_at),
        "next_step_at": _stamp(item.next_step_at),
        "acknowledged_at": _stamp(item.acknowledged_at),
        "acknowledged_by": item.acknowledged_by,
        "acknowledged_via": item.acknowledged_via,
        "device": item.device,
        "on_behalf": item.on_behalf,
        "recipients": [_copy(c) for c in copies],
    }


def event_body(event: CriticalEvent) -> dict[str, Any]:
    return {
        "at": _stamp(event.at),
        "event": event.event,
        "step": event.step,
        "channel": event.channel,
        "user_id": event.user_id,
        "actor": event.actor,
        "details": event.details,
    }


async def status_body(request: web.Request, item: CriticalItem) -> dict[str, Any]:
    return item_body(item, await request.app[STORE].critical_copies(item.id))


async def open_tracked(
    request: web.Request,
    api_key: ApiKey,
    draft: NotificationDraft,
    *,
    target: str,
    requires_ack: bool,
    item_id: str | None,
    request_hash: str,
) -> tuple[CriticalItem, list[Notification], bool]:
    """Open an item and send it; on a retry (its id taken) the first attempt's item and copies.
    Returns (item, copies, replayed)."""
    critical: CriticalService = request.app[CRITICAL]
    owner = f"apikey:{api_key.id}"
    try:
        item, notes = await critical.open(
            owner, draft, target=target, requires_ack=requires_ack, item_id=item_id, request_hash=request_hash
        )
    except CriticalItemExists:
        assert item_id is not None
        found = await request.app[STORE].critical_item(item_id)
        assert found is not None
        if found.owner != owner or found.request_hash != request_hash:
            raise ApiError(
                422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
            ) from None
        return found, await critical.copies(item_id), True
    request.app[STORE].record_audit(
        owner, "critical.send", None, {"critical_id": item.id, "target": target, "count": len(notes)}
    )
    log.info("api.critical_send", extra={"api_key": api_key.id, "item": item.id, "count": len(notes)})
    return item, notes, False


async def send_tracked(
    request: web.Request,
    api_key: ApiKey,
    drafts: list[NotificationDraft],
    tracked: list[bool],
    key: str | None,
    request_hash: str,
    claim: IdempotencyClaim | None,
) -> list[Notification]:
    """A send of `POST /v1/notifications` with critical items: the others are stored as usual
    (with the request's claim), each critical one opens its own item; in the request's order."""
    plain = [d for d, t in zip(drafts, tracked, strict=True) if not t]
    stored = iter(await request.app[SERVICE].send(plain, idempotency=claim) if plain else [])
    opened = await asyncio.gather(
        *(
            open_tracked(
                request,
                api_key,
                draft,
                target=f"user:{draft.user_id}",
                requires_ack=True,
                item_id=item_id_for(api_key, key, i),
                request_hash=request_hash,
            )
            for i, (draft, critical) in enumerate(zip(drafts, tracked, strict=True))
            if critical
        )
    )
    if any(not notes for _, notes, _ in opened):
        raise ApiError(503, "store_unavailable", "the notification could not be stored; retry shortly")
    copies = iter(notes[0] for _, notes, _ in opened)
    return [next(copies) if critical else next(stored) for critical in tracked]


# -- acknowledgement -------------------------------------------------------------------------


def _notification_id(request: web.Request) -> str:
    notification_id = request.match_info["notification_id"]
    if not is_notification_id(notification_id):
        raise ApiError(400, "invalid_notification_id", "the path must name a notification id")
    return notification_id


def _not_critical() -> ApiError:
    return ApiError(
        404, "critical_not_found", "this notification is no copy of a critical item (or it expired)"
    )


async def _caller(request: web.Request) -> tuple[ApiKey | None, str | None, str | None]:
    """(the API key, or None) or (None, the user id and token id of a connection token)."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(
            401, "credentials_required", "send an API key or the recipient's connection token as Bearer"
        )
    if presented.startswith(f"{API_KEY_PREFIX}_"):
        return await require_api_key(request), None, None
    try:
        verified = request.app[TOKENS].verify(presented)
    except InvalidCredentials as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None
    return None, verified.user_id, verified.token_id


async def _item_of(request: web.Request, user_id: str | None) -> tuple[str, CriticalItem]:
    notification_id = _notification_id(request)
    item = await request.app[CRITICAL].item_of_copy(notification_id, user_id)
    if item is None:
        raise _not_critical()
    return notification_id, item


async def acknowledgement_status(request: web.Request) -> web.Response:
    _, user_id, _ = await _caller(request)
    _, item = await _item_of(request, user_id)
    return web.json_response(await status_body(request, item))


async def acknowledge(request: web.Request) -> web.Response:
    api_key, user_id, device = await _caller(request)
    reason = None
    if api_key is not None:
        errors = FieldErrors()
        reason = parse_on_behalf(await read_json_object(request), errors)
        if errors:
            raise invalid(errors)
    notification_id, item = await _item_of(request, user_id)
    if not item.requires_ack:
        raise ApiError(409, "acknowledgement_not_required", "this group send needs no acknowledgement")
    if api_key is not None:
        ack = Acknowledgement(f"apikey:{api_key.id}", "http", None, on_behalf=True, reason=reason)
    else:
        assert user_id is not None
        ack = Acknowledgement(user_id, "http", device)
    result = await request.app[CRITICAL].acknowledge(item, ack)
    assert result.item is not None
    if api_key is not None and result.outcome == "done":
        request.app[STORE].record_audit(
            ack.by, "critical.acknowledge_on_behalf", None, {"critical_id": item.id, "reason": reason}
        )
    log.info(
        "api.acknowledge", extra={"item": item.id, "id": notification_id, "changed": result.outcome == "done"}
    )
    body = await status_body(request, result.item)
    return web.json_response(body | {"changed": result.outcome == "done"})


async def critical_status(request: web.Request) -> web.Response:
    await require_api_key(request)
    item_id = request.match_info["critical_id"]
    item = await request.app[STORE].critical_item(item_id) if is_notification_id(item_id) else None
    if item is None:
        raise ApiError(404, "critical_not_found", "no critical item with that id")
    timeline = await request.app[STORE].critical_timeline(item.id)
    return web.json_response(
        await status_body(request, item) | {"timeline": [event_body(e) for e in timeline]}
    )


async def escalation_policies(request: web.Request) -> web.Response:
    await require_api_key(request)
    return web.json_response({"policies": [p.to_api() for p in request.app[CRITICAL].policies]})


def setup_critical_routes(app: web.Application) -> None:
    router = app.router
    router.add_get(
        "/v1/notifications/{notification_id}/acknowledgement", store_errors_as_503(acknowledgement_status)
    )
    router.add_post("/v1/notifications/{notification_id}/acknowledgement", store_errors_as_503(acknowledge))
    router.add_get("/v1/critical/{critical_id}", store_errors_as_503(critical_status))
    router.add_get("/v1/escalation-policies", store_errors_as_503(escalation_policies))
