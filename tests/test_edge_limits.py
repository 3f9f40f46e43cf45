"""Limits at the edge: connections per client address, slow headers, and who a proxy speaks for."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from diagnoxix.edge.clients import Forwarding, parse_networks

from .conftest import Service


def _open_from(port: int, address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_one_address_may_hold_only_so_many_connections(make_service: Any) -> None:
    service: Service = await make_service(max_connections_per_address=3)
    port = service.client.port
    assert port is not None
    held = [await asyncio.to_thread(_open_from, port, "127.0.0.5") for _ in range(3)]
    try:
        extra = await asyncio.to_thread(_open_from, port, "127.0.0.5")
        answer = await asyncio.to_thread(_read_all, extra)
        extra.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429")
        assert b"Retry-After:" in head
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        # Another address is not affected.
        resp = await service.client.get("/healthz")
        assert resp.status == 200
        # A closed connection frees its place.
        held.pop().close()
        await asyncio.sleep(0.2)
        again = await asyncio.to_thread(_open_from, port, "127.0.0.5")
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.to_thread(_read_all, again)).startswith(b"HTTP/1.1 200")
        again.close()
    finally:
        for sock in held:
            sock.close()


async def test_a_request_whose_headers_never_end_is_let_go(make_service: Any) -> None:
    service: Service = await make_service(http_header_timeout_seconds=1.0)
    port = service.client.port
    assert port is not None
    sock = await asyncio.to_thread(_open_from, port, "127.0.0.6")
    started = time.monotonic()
    try:
        # A slowloris: a request line and one header, a byte at a time, never the blank line.
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ":
            sock.send(bytes([byte]))
            await asyncio.sleep(0.02)
        assert await asyncio.to_thread(_read_all, sock) == b""  # closed without an answer
        assert time.monotonic() - started < 3
    finally:
        sock.close()
    await asyncio.sleep(0.3)
    runner = service.client.server.runner
    assert runner is not None
    assert runner.server is not None
    assert runner.server.connections == []  # nothing of it is kept


class _Peer:
    """The transport side aiohttp reads a request's peer address from."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.address, 40000) if name == "peername" else default


def _request(peer: str, **headers: str) -> web.Request:
    return make_mocked_request("GET", "/", headers=headers, transport=_Peer(peer))


def test_forwarded_headers_are_believed_only_from_a_trusted_proxy() -> None:
    forwarding = Forwarding(parse_networks(["10.0.0.0/8", "::1"]))
    spoofed = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
    via_proxy = _request("10.1.2.3", **spoofed)
    assert forwarding.address(via_proxy) == "203.0.113.9"  # the right-most untrusted entry
    assert forwarding.scheme(via_proxy) == "https"
    direct = _request("198.51.100.7", **spoofed)
    assert forwarding.address(direct) == "198.51.100.7"
    assert forwarding.scheme(direct) == "http"
    chain = _request("10.1.2.3", **{"X-Forwarded-For": "203.0.113.9, 10.9.9.9"})
    assert forwarding.address(chain) == "203.0.113.9"
    assert Forwarding(()).address(via_proxy) == "10.1.2.3"
    # The proxy's IPv4 address as a dual-stack listener sees it is still the trusted proxy.
    assert forwarding.address(_request("::ffff:10.1.2.3", **spoofed)) == "203.0.113.9"
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        parse_networks(["not-an-address"])


async def test_the_origin_check_compares_the_scheme(make_service: Any) -> None:
    service: Service = await make_service()
    host = f"127.0.0.1:{service.client.port}"
    token = service.token("p1")
    for origin, allowed in [(f"http://{host}", True), (f"https://{host}", False)]:
        resp = await service.client.get(
            f"/v1/ws/notifications?token={token}",
            headers={
                "Origin": origin,
                "Host": host,
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
        assert (resp.status == 101) is allowed, (origin, resp.status)
        resp.close()


async def test_behind_a_trusted_tls_proxy_the_https_origin_is_our_own(make_service: Any) -> None:
    service: Service = await make_service(trusted_proxies=("127.0.0.1",))
    host = f"127.0.0.1:{service.client.port}"
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Host": host,
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Origin": f"https://{host}",
        "X-Forwarded-Proto": "https",
    }
    resp = await service.client.get(f"/v1/ws/notifications?token={service.token('p1')}", headers=headers)
    assert resp.status == 101
    resp.close()


async def test_connections_ended_by_the_server_leave_nothing_behind(make_service: Any) -> None:
    service: Service = await make_service(max_connections_per_address=2)
    port = service.client.port
    assert port is not None
    for request in [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX: \x00\r\n\r\n"] * 3:
        sock = await asyncio.to_thread(_open_from, port, "127.0.0.9")
        sock.sendall(request)
        assert (await asyncio.to_thread(_read_all, sock)).split(b" ")[1] == b"400"
        sock.close()
    refused = [await asyncio.to_thread(_open_from, port, "127.0.0.9") for _ in range(2)]
    extra = await asyncio.to_thread(_open_from, port, "127.0.0.9")
    assert (await asyncio.to_thread(_read_all, extra)).startswith(b"HTTP/1.1 429")
    extra.close()
    for sock in refused:
        sock.close()
    await asyncio.sleep(0.3)
    runner = service.client.server.runner
    assert runner is not None
    server = runner.server
    assert server is not None
    assert server.connections == []  # aiohttp let go of every connection, refused or force-closed
