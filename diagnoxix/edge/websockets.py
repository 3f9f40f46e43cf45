"""The WebSocket response of every socket the service opens: the patients' and the dashboard's.

aiohttp's own, with what a broken or hostile client meets made to match the rest of the service:

- a frame of exactly `max_frame_bytes` is taken: aiohttp refuses a message whose size reaches its
  `max_msg_size`, and our limit (docs/protocol.md) is a frame *over* so many bytes;
- a handshake key that is not ASCII is a 400, as any other key that is no key: aiohttp's base64
  decoding raises a `ValueError` for it, which it does not catch (a 500 and a traceback);
- the closes aiohttp makes itself for a frame it cannot take (1002, 1007, 1009) say why, as the
  service's own closes do; aiohttp sends them without a reason.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, hdrs, web
from aiohttp.abc import AbstractStreamWriter

_REASONS: dict[int, str] = {
    WSCloseCode.PROTOCOL_ERROR: "not a valid WebSocket frame (RFC 6455)",
    WSCloseCode.INVALID_TEXT: "a text frame that is not UTF-8",
}


class GuardedWebSocket(web.WebSocketResponse):
    __slots__ = ("_max_frame_bytes",)

    def __init__(self, *, max_frame_bytes: int, **kwargs: Any) -> None:
        super().__init__(max_msg_size=max_frame_bytes + 1, **kwargs)
        self._max_frame_bytes = max_frame_bytes

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        if not request.headers.get(hdrs.SEC_WEBSOCKET_KEY, "").isascii():
            raise web.HTTPBadRequest(text="Handshake error: the Sec-WebSocket-Key is not base64")
        return await super().prepare(request)

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if not message:
            message = self._close_reason(code).encode()
        return await super().close(code=code, message=message, drain=drain)

    def _close_reason(self, code: int) -> str:
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            return f"a client frame may be at most {self._max_frame_bytes} bytes"
        return _REASONS.get(code, "")
