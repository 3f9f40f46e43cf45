"""The OpenAPI description of scheduled sends: `/v1/scheduled` and the 202 of a scheduled send.

`deliver_at` and `schedule_key` on an item are described in prose (the send's description): a
schema cannot say "in the future, at most a year ahead", and a generated request would take it at
its word (docs/scheduling.md).
"""

from __future__ import annotations

from typing import Any

from diagnoxix.api.openapi_parts import API_KEY_ERRORS, all_required, integer, query, ref, responses
from diagnoxix.rules import HISTORY_PAGE
from diagnoxix.rules.schedule import MAX_SCHEDULE_AHEAD_DAYS, SCHEDULE_KEY_REGEX

Schema = dict[str, Any]

DEFAULT_PAGE = 50
SCHEDULING = (
    " An item with `deliver_at` (RFC 3339 with its offset, in the future, at most"
    f" {MAX_SCHEDULE_AHEAD_DAYS} days ahead; else 422) is validated like a send and stored to go out"
    " then: the answer is a 202 with its schedule. Optional `schedule_key` (your own name for it,"
    " unique among your pending sends, else 409) lets you cancel it with `DELETE /v1/scheduled?key=`."
    " A batch is scheduled whole or sent whole. A critical one (or with `requires_ack: true`)"
    " opens its critical item when it is due (`critical_id` on the schedule). See docs/scheduling.md."
)


def scheduled_202() -> Schema:
    """The 202 of `POST /v1/notifications` when its items name `deliver_at`."""
    results = {"oneOf": [ref("ScheduledResult"), ref("ScheduledBatchResult")]}
    answer: Schema = responses(202, "Scheduled", results)["202"]
    return answer


def scheduled_paths() -> dict[str, Schema]:
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    schedule_id = {"name": "schedule_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/scheduled": {
            "get": {
                "summary": "Your pending scheduled sends, soonest first",
                "security": api_key,
                "parameters": [
                    query("limit", integer(HISTORY_PAGE, default=DEFAULT_PAGE), "page size"),
                    query("after", {"type": "string"}, "the previous page's next_cursor"),
                ],
                "responses": responses(200, "A page", ref("ScheduledPage"), 400, 404, *API_KEY_ERRORS),
            },
            "delete": {
                "summary": "Cancel your pending send with this schedule_key (409 once it is sent)",
                "security": api_key,
                "parameters": [
                    {
                        "name": "key",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "pattern": SCHEDULE_KEY_REGEX},
                    }
                ],
                "responses": responses(
                    200, "Cancelled", ref("ScheduleCancelled"), 400, 404, 409, *API_KEY_ERRORS
                ),
            },
        },
        "/v1/scheduled/{schedule_id}": {
            "get": {
                "summary": "One of your scheduled sends, in any state",
                "security": api_key,
                "parameters": [schedule_id],
                "responses": responses(200, "The schedule", ref("ScheduledResult"), 404, *API_KEY_ERRORS),
            },
            "delete": {
                "summary": "Cancel one of your scheduled sends (409 once it is sent)",
                "security": api_key,
                "parameters": [schedule_id],
                "responses": responses(200, "Cancelled", ref("ScheduleCancelled"), 404, 409, *API_KEY_ERRORS),
            },
        },
    }


def scheduled_schemas() -> dict[str, Schema]:
    text = {"type": "string"}
    maybe_text = {"type": ["string", "null"]}
    schedule = all_required(
        {
            "id": text,
            "schedule_key": maybe_text,
            "state": {"enum": ["pending", "sent", "cancelled", "failed"]},
            "deliver_at": {"type": "string", "format": "date-time"},
            "user_id": maybe_text,
            "type": maybe_text,
            "created_at": {"type": "string", "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "notification_id": {**maybe_text, "description": "the notification it became, once sent"},
        }
    )
    schedule["properties"]["critical_id"] = {
        "type": "string",
        "description": "a critical send, once sent: the item it opened (its copies are the item's)",
    }
    return {
        "Schedule": schedule,
        "ScheduledResult": all_required({"scheduled": ref("Schedule")}),
        "ScheduledBatchResult": all_required(
            {"count": {"type": "integer"}, "scheduled": {"type": "array", "items": ref("Schedule")}}
        ),
        "ScheduledPage": all_required(
            {"scheduled": {"type": "array", "items": ref("Schedule")}, "next_cursor": maybe_text}
        ),
        "ScheduleCancelled": all_required(
            {
                "scheduled": ref("Schedule"),
                "cancelled": {"type": "boolean", "description": "false: it was already"},
            }
        ),
    }
