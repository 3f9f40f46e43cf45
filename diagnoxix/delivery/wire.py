"""RFC 6455 framing of text messages, so the fan-out can write a connection's queued frames at once.

aiohttp writes one frame per `send_str`, and on an idle socket each write is its own send() system
call: ten notifications for one patient cost ten trips through the TCP stack, on both ends. The
fan-out joins what a connection has queued into one write instead. Each frame is built once, when
it is published, and shared by every connection it goes to (a broadcast to 10,000 patients encodes
one frame, not 10,000). Only those frames are built here: from a server (never masked, RFC 6455
section 5.1), final, uncompressed text frames. Compressing sockets and every other frame go through
aiohttp's own writer, which takes the payload back out (`payload_of`).
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_LEN_16 = struct.Struct("!BBH").pack
_LEN_64 = struct.Struct("!BBQ").pack


def text_frame(text: str) -> bytes:
    """One complete WebSocket text frame carrying `text`, as a server sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 65536:
        return _LEN_16(_FIN_TEXT, 126, size) + payload
    return _LEN_64(_FIN_TEXT, 127, size) + payload


def payload_of(frame: bytes) -> bytes:
    """The payload of a frame `text_frame` built: what aiohttp's writer frames again."""
    size = frame[1] & 0x7F
    return frame[2 if size < 126 else 4 if size == 126 else 10 :]
