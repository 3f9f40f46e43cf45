"""A WebSocket client that completes the handshake and then never reads again: a stalled phone."""

from __future__ import annotations

import base64
import os
import socket


def client_frame(text: str) -> bytes:
    """A masked text frame, as a browser sends it (RFC 6455 section 5.3)."""
    payload = text.encode()
    mask = os.urandom(4)
    size = len(payload)
    header = bytes((0x81, 0x80 | size)) if size < 126 else bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def small_window_socket(port: int) -> socket.socket:
    """A connection to the server with a 4 KiB receive window: unread, it fills at once, so the
    server's writes back up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def non_reading_socket(port: int, path: str, *, v1: bool = False) -> socket.socket:
    """Upgrades `path`, says hello if `v1`, and reads nothing more (`small_window_socket`)."""
    sock = small_window_socket(port)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol = "Sec-WebSocket-Protocol: diagnoxix.v1\r\n" if v1 else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    if v1:
        sock.sendall(client_frame('{"type":"hello"}'))
    return sock
