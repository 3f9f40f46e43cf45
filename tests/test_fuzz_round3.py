"""An outside tester's third round: the SSE fallback, WebSocket frames past the JSON layer
(binary, fragmented, control and close frames, frames at the size limit), HTTP protocol oddities
(HTTP/1.0, absolute-form targets, `Expect`, duplicate and conflicting lengths, chunk extensions,
many headers, long cookies, HEAD and OPTIONS on every route, odd query strings), type confusion
and boundary values in JSON bodies, floods within the permitted rates (RSS), and the dashboard's
live socket and pages with odd query parameters.

Each test below records one finding and failed before its fix; its docstring says what
happened and what should. What held is listed in the round's report, not
tested here. Every test runs the real server (`run.py`, JSON logs on stderr, its own SQLite
file) and talks to it as any client on the network can, with raw bytes where a client library
would refuse to send them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from pathlib import Path

import aiohttp

from .processes import Launcher, Server, child_env
from .raw_http import add_admin, log_errors, mint_token, settle, sign_in, start_with_key


def _client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 section 5.2) of any opcode and length."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole unmasked server frame in `data`."""
    found, i = [], 0
    while i + 2 <= len(data):
        opcode, size, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if size == 126:
            size, j = int.from_bytes(data[j : j + 2], "big"), j + 2
        elif size == 127:
            size, j = int.from_bytes(data[j : j + 8], "big"), j + 8
        if j + size > len(data):
            break
        found.append((opcode, data[j : j + size]))
        i = j + size
    return found


async def _upgrade(
    server: Server, target: str, extra: bytes = b"", key: bytes | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send a WebSocket handshake for `target` (key `key`, or a valid one); (reader, writer, the
    answer's head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = key if key is not None else b"dGhlIHNhbXBsZSBub25jZQ=="
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        + b"Sec-WebSocket-Key: "
        + key
        + b"\r\n"
        + extra
        + b"\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


async def _after_hello(server: Server, token: str, payload: bytes) -> list[tuple[int, bytes]]:
    """Open a v1 socket for `token`, say hello, send `payload` as one text frame: the server's
    frames (opcode, payload) over the next 2 s."""
    reader, writer, head = await _upgrade(
        server, f"/v1/ws/notifications?token={token}", b"Sec-WebSocket-Protocol: diagnoxix.v1\r\n"
    )
    assert b" 101 " in head.split(b"\r\n")[0], head
    writer.write(_client_frame(1, b'{"type":"hello"}') + _client_frame(1, payload))
    await writer.drain()
    frames = _server_frames(await _read_for(reader, 2.0))
    writer.close()
    return frames


async def _read_for(reader: asyncio.StreamReader, seconds: float) -> bytes:
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except (TimeoutError, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    return data


# -- 1. A Sec-WebSocket-Key that is not ASCII --------------------------------------------------


async def test_a_sec_websocket_key_that_is_not_ascii_is_a_400_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A patient's valid token and a handshake whose `Sec-WebSocket-Key` holds a byte that is not
    ASCII (`\\xff\\xff`, or `é` in UTF-8). Every check of ours passes (Origin, rate, token, cap),
    then `ws.prepare` runs aiohttp's handshake, which base64-decodes the key and catches only
    `binascii.Error`: `base64.b64decode` of a str with a non-ASCII character raises ValueError.
    Today: `500 internal` and an `api.unhandled` error line with a traceback, per request, as
    often as the patient likes (an ASCII key that is no base64, `!!!!`, is a 400). It should be a
    400 in the JSON error shape and no error in the log (cause: `diagnoxix/ws/handler.py:_upgrade`
    hands the key to `WebSocketResponse.prepare` unchecked)."""
    server, key = await start_with_key(launcher, tmp_path)
    token = (await mint_token(server, key, "pat1"))["token"]
    statuses = []
    for bad in (b"\xff\xff", "é".encode() * 12):
        _, writer, head = await _upgrade(server, f"/v1/ws/notifications?token={token}", key=bad)
        writer.close()
        statuses.append(int(head.split(b" ")[1]))
    await settle()
    assert statuses == [400, 400], statuses
    assert log_errors(server) == []


async def test_a_sec_websocket_key_that_is_not_ascii_on_the_live_socket_is_a_400_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """The same handshake on the dashboard's live socket (`/dashboard/live`) by a signed-in member
    of staff: `live_socket` calls `ws.prepare` with the key unchecked. Today: a 500 and an error
    line with a traceback. It should be a 400 (cause: `diagnoxix/dashboard/live.py:live_socket`)."""
    db = tmp_path / "notify.sqlite3"
    add_admin(db)
    server = await launcher.start(db, env=child_env())
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        await sign_in(http, server)
        cookies = "; ".join(f"{c.key}={c.value}" for c in jar)
    extra = f"Origin: {server.url}\r\nCookie: {cookies}\r\n".encode()
    # A valid key first: the session and the Origin are right, the socket opens.
    _, writer, head = await _upgrade(server, "/dashboard/live", extra)
    writer.close()
    assert b" 101 " in head.split(b"\r\n")[0], head
    _, writer, head = await _upgrade(server, "/dashboard/live", extra, key=b"\xff\xff")
    writer.close()
    await settle()
    assert int(head.split(b" ")[1]) == 400, head
    assert log_errors(server) == []


# -- 2. A client frame of exactly 16 KiB -----------------------------------------------------


async def test_a_client_frame_of_exactly_16_kib_is_not_closed_1009(
    launcher: Launcher, tmp_path: Path
) -> None:
    """docs/protocol.md: 1009 is "a client frame over 16 KiB" (and docs/security.md: "16 KiB a
    frame"). A v1 `ping` frame whose payload is exactly 16,384 bytes is not over the limit, yet
    the socket is closed 1009 with no reason: aiohttp refuses a message whose size is
    `>= max_msg_size`, and the server passes `ws_max_client_frame_bytes` (16,384) as that. A
    frame of 16,383 bytes is answered. A frame at the documented limit should be answered `pong`
    (cause: `diagnoxix/ws/handler.py:_upgrade`, `max_msg_size=settings.ws_max_client_frame_bytes`
    where aiohttp's bound is exclusive)."""
    server, key = await start_with_key(launcher, tmp_path)
    token = (await mint_token(server, key, "pat1"))["token"]
    replies = {}
    for size in (16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1):
        head_text = b'{"type":"ping","request_id":"r","pad":"'
        payload = head_text + b"a" * (size - len(head_text) - 2) + b'"}'
        assert len(payload) == size
        frames = await _after_hello(server, token, payload)
        closes = [int.from_bytes(p[:2], "big") for op, p in frames if op == 8]
        pongs = [p for op, p in frames if op == 1 and b'"pong"' in p]
        replies[size] = (len(pongs), closes)
    assert replies[16 * 1024 - 1] == (1, []), replies
    assert replies[16 * 1024] == (1, []), replies
    # One byte over is over.
    assert replies[16 * 1024 + 1] == (0, [1009]), replies


# -- 3. Protocol-level closes carry no reason ------------------------------------------------


async def test_a_frame_refused_by_the_websocket_layer_is_closed_with_a_reason(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A bad input must get a clear error: on a socket, an error frame or a close code with a
    reason (the server's own closes have one: 1008 "too many frames", 1013 "store unavailable;
    reconnect to resume"). A frame the WebSocket layer refuses is closed by aiohttp with the code
    alone: a 20,000-byte text frame gets 1009 and a text frame that is not UTF-8 gets 1007, each
    with an empty reason (aiohttp knows it, "Message size 20000 exceeds limit 16384", and drops
    it: `WebSocketResponse.receive` closes with `exc.code` only). The client should learn why
    (cause: `diagnoxix/ws/handler.py:websocket_handler` leaves these closes to aiohttp)."""
    server, key = await start_with_key(launcher, tmp_path)
    token = (await mint_token(server, key, "pat1"))["token"]
    closes = {}
    for name, payload in (("too big", b"x" * 20_000), ("not utf-8", b'{"type":"ping","x":"\xff"}')):
        frames = await _after_hello(server, token, payload)
        closes[name] = [(int.from_bytes(p[:2], "big"), p[2:]) for op, p in frames if op == 8]
    assert [code for ((code, _),) in closes.values()] == [1009, 1007], closes
    assert all(reason for ((_, reason),) in closes.values()), closes


# -- 4. A Content-Encoding the server does not decode ------------------------------------------


async def test_a_body_in_a_coding_the_server_does_not_decode_is_a_415(
    launcher: Launcher, tmp_path: Path
) -> None:
    """aiohttp takes a `Content-Encoding` it does not know (`xyz`, `x-gzip`, `compress`) as no
    coding at all: a plain JSON body labelled `xyz` was stored (201), and a gzip body labelled
    `x-gzip` was "not valid JSON" (400), which is not the problem. Both are now a 415 that says
    which codings the server decodes, and nothing is stored; gzip itself is still decoded."""
    server, key = await start_with_key(launcher, tmp_path)
    body = json.dumps({"user_id": "pat1", "title": "t", "message": "m"}).encode()
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for coding, data in (("xyz", body), ("x-gzip", gzip.compress(body)), ("compress", body)):
            headers = {**auth, "Content-Encoding": coding}
            async with http.post(f"{server.url}/v1/notifications", data=data, headers=headers) as resp:
                assert resp.status == 415, (coding, resp.status, await resp.text())
                error = (await resp.json())["error"]
                assert error["code"] == "unsupported_media_type"
                assert "gzip" in error["message"]
        async with http.get(f"{server.url}/v1/users/pat1/notifications", headers=auth) as resp:
            assert (await resp.json())["notifications"] == []
        headers = {**auth, "Content-Encoding": "gzip"}
        async with http.post(
            f"{server.url}/v1/notifications", data=gzip.compress(body), headers=headers
        ) as resp:
            assert resp.status == 201, await resp.text()
    await settle()
    assert log_errors(server) == []
