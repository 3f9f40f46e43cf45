"""One JSON error shape for every HTTP failure: `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("diagnoxix.api")

# Stable codes for the statuses aiohttp itself raises (unknown route, wrong method, big body).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}


_RETRY = {"Retry-After": "5"}


class Unavailable(RuntimeError):
    """Something a request needs cannot answer now (the database restarting, the store shutting
    down): the client should retry, so a 503, never a 500. The store's `StoreUnavailable` is of
    this kind; routes answer it in their own words where they can, this is the net under the rest."""


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        # E.g. Retry-After on a 429.
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return web.json_response(body, status=status, headers=headers)


# Set on a handler that turns its own failures into responses (see `answers_own_errors`).
_OWN_ERRORS_ATTR = "_diagnoxix_answers_own_errors"
_H = TypeVar("_H", bound=Handler)


def answers_own_errors(handler: _H) -> _H:
    """Mark a handler that answers its own errors, so the middleware adds no frame around it.

    For the WebSocket handler: its coroutine lives as long as the socket, and a middleware
    coroutine awaiting it would too, costing every idle connection a few hundred bytes.
    """
    setattr(handler, _OWN_ERRORS_ATTR, True)
    return handler


def client_fault(exc: BaseException) -> ApiError | None:
    """The 4xx for what a client's bytes made aiohttp raise past a handler, or None.

    A body that is not the gzip or deflate its `Content-Encoding` says, and a static file name
    longer than the file system allows (`OSError` ENAMETOOLONG from aiohttp's static handler).
    """
    if isinstance(exc, web.RequestPayloadError):
        return ApiError(
            400, "invalid_body", "the request body could not be read (its Content-Encoding does not decode)"
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return ApiError(404, "not_found", "no such file")
    return None


def response_for(request: web.BaseRequest, exc: Exception) -> web.Response:
    """The JSON error response for a failed request; re-raises redirects and other non-errors."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        if exc.status == 413:
            message = "the request body is too large"
        elif exc.status == 404:
            message = f"no such endpoint: {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        else:
            message = exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "error"), message, None, headers)
    if isinstance(exc, Unavailable):
        log.info(
            "api.unavailable",
            extra={"path": request.path, "method": request.method, "error": type(exc).__name__},
        )
        return error_response(
            503, "unavailable", "the server cannot answer this now; retry shortly", None, _RETRY
        )
    if isinstance(exc, ConnectionError):
        # The client went away mid-request (e.g. during a WebSocket handshake): not our error.
        log.info("api.client_gone", extra={"path": request.path, "method": request.method})
        return error_response(400, "connection_lost", "the client went away")
    if (fault := client_fault(exc)) is not None:
        log.info("api.bad_request", extra={"path": request.path, "problem": type(exc).__name__})
        return error_response(fault.status, fault.code, fault.message)
    # Never echo internals (or request content) back; the log has the traceback and the route.
    log.error("api.unhandled", exc_info=exc, extra={"path": request.path, "method": request.method})
    return error_response(500, "internal", "internal server error")


@web.middleware
def error_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    # Deliberately not a coroutine: a handler that answers its own errors is handed back as is,
    # and aiohttp awaits it directly (no frame of ours kept alive around a long-lived socket).
    if getattr(handler, _OWN_ERRORS_ATTR, False):
        return handler(request)
    return _answer_errors(request, handler)


async def _answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return response_for(request, exc)
