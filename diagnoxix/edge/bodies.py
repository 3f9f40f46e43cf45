"""A request's body, read within the time a connection has to send a whole request.

aiohttp's keep-alive timeout (`DIAGNOXIX_HTTP_HEADER_TIMEOUT`) lets a connection go only while it
waits for a request's head; once the head is in, the body would be read for as long as a client
cares to trickle it, one byte at a time, holding a connection and a handler. Every handler that
reads a body reads it here instead.

A body refused here (or not read in time) is never kept: once the answer is written, aiohttp
reads and discards what still comes of it for up to 10 s (its lingering close, so that a client
still sending gets the answer rather than a reset), then closes the connection if the body has
not ended, or carries on with the next request if it has.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web

# What aiohttp decodes (`br` and `zstd` only with their libraries; without, aiohttp answers 400
# before any handler runs), and no coding at all.
_DECODED = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})


async def read_body(request: web.BaseRequest, seconds: float, *, most: int | None = None) -> bytes:
    """The whole body; 408 once reading it takes longer than `seconds`.

    `most`: a body over this many bytes is a 413 before any of it is read, and one that does not
    say its length (chunked) a 411; without it, the app's `client_max_size` bounds the body.
    aiohttp keeps the body once read, so `request.post()` and the like read it from memory after.
    """
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip()
    if coding.lower() not in _DECODED:
        # aiohttp passes a coding it does not know on as if none: the body would be read as
        # whatever its bytes happen to be (then "not valid JSON", which is not the problem).
        raise web.HTTPUnsupportedMediaType(
            reason="the body's Content-Encoding is none the server decodes: send it as gzip, deflate"
            " or without one"
        )
    if most is not None:
        length = request.content_length
        if length is None and request.body_exists:
            raise web.HTTPLengthRequired(reason="send the body with a Content-Length")
        if length is not None and length > most:
            raise web.HTTPRequestEntityTooLarge(
                max_size=most, actual_size=length, reason=f"the body may be at most {most} bytes"
            )
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            reason=f"the request's body took more than {seconds:g} s to arrive"
        ) from None
