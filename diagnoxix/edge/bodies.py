"""A request's body, read within the time a connection has to send a whole request.

aiohttp's keep-alive timeout (`DIAGNOXIX_HTTP_HEADER_TIMEOUT`) lets a connection go only while it
waits for a request's head; once the head is in, the body would be read for as long as a client
cares to trickle it, one byte at a time, holding a connection and a handler. Every handler that
reads a body reads it here instead.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


async def read_body(request: web.BaseRequest, seconds: float) -> bytes:
    """The whole body; 408 (the connection closed) once reading it takes longer than `seconds`.

    aiohttp keeps the body once read, so `request.post()` and the like read it from memory after.
    """
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        # What is left of the body will not come in time either: no lingering read of it.
        request.protocol.force_close()
        raise web.HTTPRequestTimeout(
            reason=f"the request's body took more than {seconds:g} s to arrive"
        ) from None
