"""Scheduled sends over HTTP: `deliver_at` on `POST /v1/notifications`, and `/v1/scheduled`.

An item with `deliver_at` is validated like any send (typed ones worded), then stored as a
durable timer (`delivery.scheduled`) instead of being sent: the answer is a 202 with its schedule.
A batch is scheduled whole (every item names its `deliver_at`) or sent whole. An API key sees
and cancels only its own schedules (another key's are a 404). Audited without content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from diagnoxix.api.common import int_param, require_api_key, store_errors_as_503
from diagnoxix.delivery.scheduled import SCHEDULED_SEND, scheduled_send
from diagnoxix.errors import ApiError
from diagnoxix.keys import SCHEDULER, STORE
from diagnoxix.models import ApiKey, NotificationDraft, format_timestamp
from diagnoxix.rules import HISTORY_PAGE, FieldErrors
from diagnoxix.rules.corrections import is_notification_id
from diagnoxix.rules.schedule import SCHEDULE_FIELDS, parse_deliver_at, schedule_key_problem
from diagnoxix.store.protocols import IdempotencyClaim, TimerKeyTaken
from diagnoxix.store.timer_records import Timer

DEFAULT_SCHEDULED_PAGE = 50
# What the API calls a job's states.
_STATES = {"pending": "pending", "done": "sent", "cancelled": "cancelled", "failed": "failed"}


@dataclass(slots=True)
class Schedules:
    """The items of a send without their schedule fields, and each one's time and key (None:
    the send is not scheduled)."""

    items: list[Any]
    times: list[datetime] | None = None
    keys: list[str | None] = field(default_factory=list)


def owner_of(api_key: ApiKey) -> str:
    return f"apikey:{api_key.id}"


def split_schedules(items: list[Any], batch: bool, now: datetime, errors: FieldErrors) -> Schedules:
    """Take `deliver_at` and `schedule_key` off each item (the rest is parsed as a send), checked."""
    if not any(isinstance(item, dict) and "deliver_at" in item for item in items):
        for i, item in enumerate(items):
            if isinstance(item, dict) and "schedule_key" in item:
                errors.add(f"{_prefix(batch, i)}schedule_key", "is only for a send with deliver_at")
        return Schedules(items)
    schedules = Schedules([], [])
    seen: set[str] = set()
    for i, item in enumerate(items):
        prefix = _prefix(batch, i)
        if not isinstance(item, dict):
            schedules.items.append(item)
            continue
        schedules.items.append({k: v for k, v in item.items() if k not in SCHEDULE_FIELDS})
        if "deliver_at" not in item:
            errors.add(f"{prefix}deliver_at", "is required when another item of the batch has one")
        else:
            moment = parse_deliver_at(item["deliver_at"], now, f"{prefix}deliver_at", errors)
            if moment is not None and schedules.times is not None:
                schedules.times.append(moment)
        key = item.get("schedule_key")
        if key is not None and (problem := schedule_key_problem(key)) is not None:
            errors.add(f"{prefix}schedule_key", problem)
        elif key is not None and key in seen:
            errors.add(f"{prefix}schedule_key", "is given to another item of this batch")
        elif key is not None:
            seen.add(key)
        schedules.keys.append(key)
    return schedules


def _prefix(batch: bool, i: int) -> str:
    return f"notifications[{i}]." if batch else ""


def schedule_view(job: Timer) -> dict[str, Any]:
    """A schedule as the API shows it: never the notification's words."""
    return {
        "id": job.id,
        "schedule_key": job.key,
        "state": _STATES.get(job.state, job.state),
        "deliver_at": format_timestamp(job.due_at),
        "user_id": job.payload.get("user_id"),
        "type": job.payload.get("type"),
        "created_at": format_timestamp(job.created_at),
        "finished_at": format_timestamp(job.finished_at) if job.finished_at else None,
        "notification_id": job.result[0] if job.result else None,
    } | ({"critical_id": job.payload["critical_id"]} if "critical_id" in job.payload else {})


def scheduled_response(jobs: list[Timer], batch: bool, *, replayed: bool = False) -> web.Response:
    body: dict[str, Any]
    if batch:
        body = {"count": len(jobs), "scheduled": [schedule_view(j) for j in jobs]}
    else:
        body = {"scheduled": schedule_view(jobs[0])}
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return web.json_response(body, status=202, headers=headers)


async def schedule_sends(
    request: web.Request,
    api_key: ApiKey,
    drafts: list[NotificationDraft],
    schedules: Schedules,
    batch: bool,
    claim: IdempotencyClaim | None,
    requires_ack: list[bool] | None = None,
) -> web.Response:
    """Store one pending send per draft (with the request's Idempotency-Key claim), then 202."""
    assert schedules.times is not None
    owner = owner_of(api_key)
    required = requires_ack or [False] * len(drafts)
    new = [
        scheduled_send(owner, draft, due, key, requires_ack=ack)
        for draft, due, key, ack in zip(drafts, schedules.times, schedules.keys, required, strict=True)
    ]
    try:
        jobs = await request.app[STORE].add_timers(new, claim)
    except TimerKeyTaken as exc:
        raise ApiError(
            409,
            "schedule_key_taken",
            "a pending send of this API key already has this schedule_key; cancel it first",
            {"schedule_key": exc.key},
        ) from None
    request.app[SCHEDULER].wake()
    target = drafts[0].user_id if len(drafts) == 1 else None
    request.app[STORE].record_audit(
        owner, "notification.schedule", target, {"count": len(jobs), "schedule_ids": [j.id for j in jobs]}
    )
    return scheduled_response(jobs, batch)


async def replayed_schedules(
    request: web.Request, api_key: ApiKey, ids: tuple[str, ...], batch: bool
) -> web.Response:
    """The answer to a retry of a scheduling request (its Idempotency-Key recorded 202)."""
    jobs = await request.app[STORE].get_timers(owner_of(api_key), ids)
    return scheduled_response(jobs, batch, replayed=True)


# -- /v1/scheduled ---------------------------------------------------------------------------


def _schedule_id(request: web.Request) -> str:
    # Only the key's own ids are ever found; one that is no id of ours (NUL, which PostgreSQL
    # cannot even compare) is not looked up.
    return request.match_info["schedule_id"]


async def _own(request: web.Request, api_key: ApiKey, schedule_id: str) -> Timer:
    found = (
        await request.app[STORE].get_timers(owner_of(api_key), [schedule_id])
        if is_notification_id(schedule_id)
        else []
    )
    if not found or found[0].kind != SCHEDULED_SEND:
        raise ApiError(404, "schedule_not_found", "this API key has no scheduled send with that id")
    return found[0]


async def list_scheduled(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    limit = int_param(request, "limit", DEFAULT_SCHEDULED_PAGE, HISTORY_PAGE)
    assert limit is not None
    after = request.query.get("after") or None
    if after is not None:
        await _own(request, api_key, after)
    jobs = await request.app[STORE].pending_timers(
        owner_of(api_key), SCHEDULED_SEND, after_id=after, limit=limit
    )
    return web.json_response(
        {
            "scheduled": [schedule_view(j) for j in jobs],
            "next_cursor": jobs[-1].id if len(jobs) == limit else None,
        }
    )


async def get_scheduled(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    job = await _own(request, api_key, _schedule_id(request))
    return web.json_response({"scheduled": schedule_view(job)})


async def cancel_scheduled(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    return await _cancel(request, api_key, await _own(request, api_key, _schedule_id(request)))


async def cancel_scheduled_by_key(request: web.Request) -> web.Response:
    api_key = await require_api_key(request)
    key = request.query.get("key")
    if key is None:
        raise ApiError(400, "invalid_key", "key is required: the schedule_key of the send to cancel")
    if (problem := schedule_key_problem(key)) is not None:
        raise ApiError(400, "invalid_key", f"key {problem}")
    job = await request.app[STORE].find_timer_by_key(owner_of(api_key), SCHEDULED_SEND, key)
    if job is None:
        raise ApiError(404, "schedule_not_found", "this API key has no scheduled send with that key")
    return await _cancel(request, api_key, job)


async def _cancel(request: web.Request, api_key: ApiKey, job: Timer) -> web.Response:
    """Cancelled now (or already): 200. Sent already, or failed: 409, nothing changes."""
    store = request.app[STORE]
    owner = owner_of(api_key)
    if job.state == "pending" and await store.cancel_timer(owner, job.id):
        store.record_audit(owner, "notification.schedule_cancel", job.id, {"schedule_key": job.key})
        job = await _own(request, api_key, job.id)
        return web.json_response({"scheduled": schedule_view(job), "cancelled": True})
    job = await _own(request, api_key, job.id)  # it may have been sent meanwhile
    if job.state == "cancelled":
        return web.json_response({"scheduled": schedule_view(job), "cancelled": False})
    if job.state == "done":
        raise ApiError(
            409,
            "schedule_already_sent",
            "this scheduled send has been sent already; it cannot be cancelled",
            {"notification_id": job.result[0] if job.result else None},
        )
    raise ApiError(409, "schedule_failed", "this scheduled send failed; there is nothing to cancel")


def setup_scheduled_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/scheduled", store_errors_as_503(list_scheduled))
    router.add_delete("/v1/scheduled", store_errors_as_503(cancel_scheduled_by_key))
    router.add_get("/v1/scheduled/{schedule_id}", store_errors_as_503(get_scheduled))
    router.add_delete("/v1/scheduled/{schedule_id}", store_errors_as_503(cancel_scheduled))
