"""What a client sends never comes back in an error or lands in the log, however it is malformed."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from .processes import Launcher, Server

SECRET = "dxn_k3y1d_" + "Sup3rS3cretPart" * 4


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _error_lines(server: Server) -> list[str]:
    return [
        line
        for line in server.stderr().splitlines()
        if json.loads(line).get("level") in {"error", "critical"}
    ]


async def test_an_oversized_header_or_line_is_answered_in_json_and_never_quoted(
    launcher: Launcher, tmp_path: Path
) -> None:
    server = await launcher.start(tmp_path / "s.sqlite3")
    padding = "A" * 9000
    requests = [
        # The key first, then enough to pass 8 KiB: aiohttp quotes the line's first 100 bytes.
        f"GET /v1/presence HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}{padding}\r\n\r\n",
        f"GET /v1/presence?token={SECRET}{padding} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1/presence HTTP/1.1\r\nHost: x\r\nX-{SECRET}: 1\r\n\x00broken\r\n\r\n",
    ]
    for request in requests:
        answer = await asyncio.to_thread(_exchange, server.port, request.encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"400", head
        assert b"application/json" in head
        assert json.loads(body)["error"]["code"] == "bad_request"
        assert SECRET.encode()[:20] not in answer
    await asyncio.sleep(0.2)
    log = server.stderr()
    assert SECRET[:20] not in log
    assert "Traceback" not in log
    assert _error_lines(server) == []
    assert log.count('"http.bad_request"') == len(requests)


async def test_a_client_that_drops_during_the_handshake_is_not_an_error(
    launcher: Launcher, tmp_path: Path
) -> None:
    server = await launcher.start(tmp_path / "s.sqlite3", dev=True)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(
                b"GET /v1/ws/notifications?user_id=p1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            # Reset at once (SO_LINGER 0): the server is still answering the upgrade.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await asyncio.sleep(0.5)
    assert _error_lines(server) == []
    assert "Traceback" not in server.stderr()
