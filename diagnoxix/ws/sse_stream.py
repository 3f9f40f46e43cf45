"""The SSE fallback's end of a `Connection`: the frames a WebSocket carries, as server-sent events.

A `Connection` (delivery/connection.py) writes through a `Socket`; `SseSocket` is one over an
aiohttp-sse `EventSourceResponse`, so an SSE stream sits in the hub like any socket, with the same
bounded queue, write timeout and close codes. Each frame is one event whose `data:` is the frame's
JSON, unchanged. A frame with a seq of the user's stream (a notification, `retracted`, `updated`)
carries it as the event's `id:`, and so does `welcome` (its `last_seq`, where the client's cursor
stands once the replay is done): a browser that reconnects by itself sends the last id back as
`Last-Event-ID`, and the replay resumes exactly after it (delivery/resume.py).

Closing sends one last event, `{"type": "close", "code", "reason"}` with the code a WebSocket
would have closed with (1001, 1013, 4001, 4003, ...), then ends the response.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import WSMsgType, web
from aiohttp_sse import EventSourceResponse

from diagnoxix.delivery import frames


def event_id(text: str) -> str | None:
    """The `id:` of the event carrying `text` (a frame the server built): its seq, if it has one."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(frame, dict):
        return None
    seq = frame.get("last_seq") if frame.get("type") == "welcome" else frame.get("seq")
    return str(seq) if type(seq) is int and seq >= 0 else None


class SseSocket:
    """A `delivery.connection.Socket` writing events to one SSE response."""

    __slots__ = ("_closed", "_response")

    def __init__(self, response: EventSourceResponse) -> None:
        self._response = response
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed or not self._response.is_connected()

    @property
    def compress(self) -> bool:
        return False

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await self._send(data)

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None:
        await self._send(message.decode())

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """The `close` event, then the end of the stream (the handler's `wait` returns)."""
        if self._closed:
            return False
        self._closed = True
        try:
            if self._response.is_connected():
                reason = message.decode(errors="replace")
                await self._response.send(frames.control("close", code=code, reason=reason))
        finally:
            self._response.stop_streaming()
        return True

    async def _send(self, text: str) -> None:
        if self._closed:
            raise ConnectionResetError("the stream is closed")
        await self._response.send(text, id=event_id(text))


class StreamSide:
    """The `delivery.connection.WriteSide` of an SSE stream: always "paused", so every event goes
    through the connection's own sender (which awaits the response's writer and its chunked
    encoding) and never straight onto the transport; the transport is there to be dropped when a
    client stops reading."""

    __slots__ = ("_request",)

    def __init__(self, request: web.BaseRequest) -> None:
        self._request = request

    @property
    def writing_paused(self) -> bool:
        return True

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._request.transport
