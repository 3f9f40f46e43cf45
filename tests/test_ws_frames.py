"""Frames the fan-out builds itself (`wire.text_frame`) read back by a real WebSocket client.

A server on loopback writes them straight to its transport, several in one write as the fan-out
does, and aiohttp's client, a WebSocket implementation we did not write, must read each text back
exactly: every length encoding (7-bit, 16-bit and 64-bit) at its boundaries, empty, and
characters of 2, 3 and 4 bytes in UTF-8. A slow client's sender hands aiohttp the payload back
(`payload_of`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType, web

from diagnoxix.delivery.wire import payload_of, text_frame

from .conftest import AiohttpClient

TEXTS = [
    "",
    "x" * 125,
    "x" * 126,
    "é" * 100,  # 200 bytes from 100 characters: the 16-bit length counts bytes
    "x" * 65_535,
    "x" * 65_536,
    "\U0001fa7a lab result ready 日本語",
    '{"type":"lab_result","title":"Ready","seq":1}',
]


async def test_a_real_client_reads_back_every_frame_of_one_write(aiohttp_client: AiohttpClient) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        request.transport.write(b"".join(text_frame(text) for text in TEXTS))
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    client: Any = await aiohttp_client(app)
    ws = await client.ws_connect("/ws", max_msg_size=0)
    received = []
    for _ in TEXTS:
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.TEXT, msg
        received.append(msg.data)
    await ws.close()
    assert received == TEXTS


def test_the_payload_comes_back_out_of_every_length_encoding() -> None:
    for text in TEXTS:
        assert payload_of(text_frame(text)) == text.encode()
