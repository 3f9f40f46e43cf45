"""Every documented route of the API, filled in so it can be called: for the tests that sweep
them all (a store that cannot answer, a database that crashed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from diagnoxix.api.openapi import openapi_document
from diagnoxix.config import Settings

# A valid body for each route that takes one.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/ws/test-notification": {"user_id": "u1", "title": "t"},
    "/v1/notifications": {"user_id": "u1", "title": "t"},
    "/v1/broadcasts": {"title": "t"},
    "/v1/users/{user_id}/notifications/read": {"ids": ["n1"]},
    "/v1/tokens": {"user_id": "u1"},
    "/v1/notifications/{notification_id}/retract": {"reason": "r"},
    "/v1/notifications/{notification_id}": {"title": "t", "reason": "r"},
    "/v1/groups/{group}/members/{user_id}": {"on_duty": True},
    "/v1/groups/{group}/notifications": {"title": "t"},
    "/v1/notifications/{notification_id}/acknowledgement": {"reason": "r"},
}

PATH_PARAMETERS = {
    "{user_id}": "u1",
    "{token_id}": "0123456789abcdef",
    "{schedule_id}": "s1",
    "{notification_id}": "n1",
    "{group}": "ward:b-nurses",
    "{critical_id}": "c1",
    "{subscription_id}": "01234567-89ab-cdef-0123-456789abcdef",
}


def documented_routes(settings: Settings) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(method, documented path, URL to call, its OpenAPI operation) for every operation."""
    for path, operations in openapi_document(settings)["paths"].items():
        url = path
        for name, value in PATH_PARAMETERS.items():
            url = url.replace(name, value)
        for method, operation in operations.items():
            yield method, path, url, operation


def needs_api_key(operation: dict[str, Any]) -> bool:
    return {"apiKey": []} in operation.get("security", [])


# Streams: a sweep opens them on its own terms.
STREAMS = {"/v1/ws/notifications", "/v1/sse/notifications"}


def sweep_routes(settings: Settings, key: str, token: str) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """(method, documented path, URL to call, JSON headers with the credential it takes: the API
    key `key` or a user's `token`) for every operation but the streams."""
    for method, path, url, operation in documented_routes(settings):
        if path in STREAMS:
            continue
        bearer = key if needs_api_key(operation) else token
        yield method, path, url, {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}


async def call_every_route(service: Any) -> list[tuple[str, str, int, str]]:
    """Call each documented route but the streams once, with the API key or else a user's token
    (`service`: a `conftest.Service`); (method, path, status, body) for each."""
    token = service.token("u1")
    answers = []
    for method, path, url, operation in documented_routes(service.settings):
        if path in STREAMS:
            continue
        auth = service.auth() if needs_api_key(operation) else {"Authorization": f"Bearer {token}"}
        resp = await service.client.request(method, url, json=BODIES.get(path), headers=auth)
        answers.append((method, path, resp.status, await resp.text()))
    return answers
