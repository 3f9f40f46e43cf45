"""A request's body, read within the time a connection has to send a whole request.

aiohttp's keep-alive timeout (`DIAGNOXIX_HTTP_HEADER_TIMEOUT`) lets a connection go only while it
waits for a request's head; once the head is in, the body would be read for as long as a client
cares to trickle it, one byte at a time, holding a connection and a handler. Every handler that
reads a body reads it here instead.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


async def read_body(request: web.BaseRequest, seconds: float, *, most: int | None = None) -> bytes:
    """The whole body; 408 (the connection closed) once reading it takes longer than `seconds`.

    `most`: a body over this many bytes is a 413 before any of it is read, and one that does not
    say its length (chunked) a 411; without it, the app's `client_max_size` bounds the body.
    aiohttp keeps the body once read, so `request.post()` and the like read it from memory after.
    """
    if most is not None:
        length = request.content_length
        if length is None and request.body_exists:
            _close_after_answer(request)
            raise web.HTTPLengthRequired(reason="send the body with a Content-Length")
        if length is not None and length > most:
            _close_after_answer(request)
            raise web.HTTPRequestEntityTooLarge(
                max_size=most, actual_size=length, reason=f"the body may be at most {most} bytes"
            )
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        # What is left of the body will not come in time either.
        _close_after_answer(request)
        raise web.HTTPRequestTimeout(
            reason=f"the request's body took more than {seconds:g} s to arrive"
        ) from None


def _close_after_answer(request: web.BaseRequest) -> None:
    """The connection ends once the answer is written: the rest of the body is never read.

    aiohttp discards what still comes of it for a while (its lingering close, so that a client
    still sending gets the answer rather than a reset), keeping none of it. `force_close()` would
    drop the connection before the answer is written: the client would see it cut, no status.
    """
    request.protocol.close()
