"""The SSE fallback (`GET /v1/sse/notifications`) with a real aiohttp client against the real
server: the WebSocket's frames as events, exact resume by `Last-Event-ID`, comment heartbeats, the
handshake's refusals, caps, revocation, token expiry, acks over HTTP, and a client that stops
reading."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from diagnoxix.auth import TokenIssuer
from diagnoxix.keys import HUB, STORE, TOKENS

from .conftest import Service
from .processes import Launcher, child_env
from .sse_client import SseReader

PATH = "/v1/sse/notifications"
SECRET = "sse-test-secret-" + "s" * 40


@contextlib.asynccontextmanager
async def stream(
    service: Service, user_id: str, *, token: str | None = None, query: str = "", **headers: str
) -> AsyncIterator[SseReader]:
    """An open stream as `user_id` (with a fresh token unless one is given)."""
    token = token or service.token(user_id)
    resp = await service.client.get(f"{PATH}?token={token}{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    try:
        yield SseReader(resp)
    finally:
        resp.close()


async def _error(resp: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await resp.json()
    return resp.status, body["error"]["code"]


async def test_the_stream_carries_the_websockets_frames_with_seqs_as_event_ids(service: Service) -> None:
    async with stream(service, "alice") as sse:
        resp = sse.response
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Accel-Buffering"] == "no"  # nginx passes each event at once
        assert resp.headers["Cache-Control"] == "no-store"
        (welcome,) = await sse.frames_until("welcome")
        hello = welcome.frame()
        assert hello["user_id"] == "alice"
        assert hello["recovered"] is True
        assert hello["unread"] == 0
        assert welcome.id == str(hello["last_seq"])
        sent = [await service.send("alice", f"n{i}") for i in range(3)]
        got = await sse.notifications(3)
        assert [e.id for e in got] == [str(n["seq"]) for n in sent]
        frames = [e.frame() for e in got]
        assert [f["id"] for f in frames] == [n["id"] for n in sent]
        assert {"type", "user_id", "title", "message", "data", "timestamp", "id", "seq", "read"} <= set(
            frames[0]
        )
        # Read state follows over HTTP: every connection of the user gets the new count.
        auth = {"Authorization": f"Bearer {service.token('alice')}"}
        read = await service.client.post(
            "/v1/users/alice/notifications/read", json={"ids": [sent[0]["id"]]}, headers=auth
        )
        assert read.status == 200, await read.text()
        unread = await sse.next_event()
        assert unread.frame() == {"type": "unread", "count": 2}
        assert unread.id is None  # a frame without a seq leaves the client's last event id alone


async def test_last_event_id_resumes_exactly_and_wins_over_since(service: Service) -> None:
    sent = [await service.send("bob", f"n{i}") for i in range(4)]
    await service.send("carol", "someone else's")
    # As a browser reconnects by itself: the same URL (with its old `since`), plus Last-Event-ID.
    async with stream(service, "bob", query="&since=0", **{"Last-Event-ID": str(sent[1]["seq"])}) as sse:
        events = await sse.frames_until("welcome")
        assert [e.frame()["id"] for e in events[:-1]] == [sent[2]["id"], sent[3]["id"]]
        welcome = events[-1].frame()
        assert welcome["since"] == sent[1]["seq"]
        assert welcome["replayed"] == 2
        live = await service.send("bob", "live")
        (event,) = await sse.notifications(1)
        assert event.frame()["id"] == live["id"]
    # `since` alone resumes the same way, and a cursor past everything replays nothing.
    async with stream(service, "bob", query=f"&since={sent[2]['seq']}") as sse:
        events = await sse.frames_until("welcome")
        assert [e.frame()["id"] for e in events[:-1]] == [sent[3]["id"], live["id"]]
    async with stream(service, "bob", **{"Last-Event-ID": events[-1].id or ""}) as sse:
        assert len(await sse.frames_until("welcome")) == 1


async def test_corrections_come_as_events_with_their_seq(service: Service) -> None:
    note = await service.send("dora", "wrong patient")
    async with stream(service, "dora", **{"Last-Event-ID": str(note["seq"] - 1)}) as sse:
        await sse.frames_until("welcome")
        resp = await service.client.post(
            f"/v1/notifications/{note['id']}/retract",
            json={"reason": "wrong patient"},
            headers=service.auth(),
        )
        assert resp.status == 200, await resp.text()
        seq = (await resp.json())["seq"]
        event = await sse.next_event()
        assert event.frame()["type"] == "retracted"
        assert event.frame()["id"] == note["id"]
        assert event.id == str(seq)


async def test_idle_streams_get_comment_heartbeats(make_service: Callable[..., Awaitable[Service]]) -> None:
    service = await make_service(sse_heartbeat_seconds=1.0)
    async with stream(service, "erin") as sse:
        await sse.frames_until("welcome")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await sse.next_event(timeout=2.5)  # no event, but the comments keep proxies awake
        assert len(sse.comments) >= 2, sse.comments
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "last_event_id",
    ["abc", "-1", "1.5", "99999999999999999999999", "0x10", "１２"],
)
async def test_a_bad_last_event_id_is_a_400_never_a_5xx(service: Service, last_event_id: str) -> None:
    resp = await service.client.get(
        f"{PATH}?token={service.token('fred')}", headers={"Last-Event-ID": last_event_id}
    )
    assert await _error(resp) == (400, "invalid_last_event_id")


async def test_refusals_before_the_stream_in_the_json_error_shape(
    service: Service, dev_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    client = service.client
    assert await _error(await client.get(PATH)) == (401, "token_required")
    assert await _error(await client.get(f"{PATH}?token=forged.token.here")) == (401, "invalid_token")
    assert await _error(await client.get(f"{PATH}?user_id=gina")) == (401, "token_required")
    token = service.token("gina")
    assert await _error(await client.get(f"{PATH}?token={token}&since=x")) == (400, "invalid_since")
    assert await _error(await client.get(f"{PATH}?token={token}&epoch=%00")) == (400, "invalid_epoch")
    evil = await client.get(f"{PATH}?token={token}", headers={"Origin": "https://evil.example"})
    assert await _error(evil) == (403, "origin_not_allowed")
    assert (await client.post(f"{PATH}?token={token}")).status == 405
    # An Authorization header works for clients that can set one.
    resp = await client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    resp.close()
    # --dev accepts the seed guide's user_id, and checks it.
    resp = await dev_service.client.get(f"{PATH}?user_id=gina")
    assert resp.status == 200
    assert (await SseReader(resp).frames_until("welcome"))[-1].frame()["user_id"] == "gina"
    resp.close()
    assert await _error(await dev_service.client.get(f"{PATH}?user_id=bad%20id")) == (400, "invalid_user_id")
    # No request line with its query string (the token) reaches a log.
    assert token not in caplog.text


async def test_the_per_user_cap_counts_streams_and_sockets_together(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    service = await make_service(ws_max_connections_per_user=2)
    ws = await service.connect("hana", v1=True)
    async with stream(service, "hana") as sse:
        await sse.frames_until("welcome")
        assert service.app[HUB].connections_of("hana") == 2
        resp = await service.client.get(f"{PATH}?token={service.token('hana')}")
        assert await _error(resp) == (429, "too_many_connections")
    await ws.close()


async def test_revoking_the_device_closes_its_stream_4003_and_refuses_the_token(service: Service) -> None:
    token = service.token("ivan")
    async with stream(service, "ivan", token=token) as sse:
        await sse.frames_until("welcome")
        resp = await service.client.delete("/v1/users/ivan/devices", headers=service.auth())
        assert resp.status == 200, await resp.text()
        (close,) = await sse.until_end()
        assert close.frame() == {"type": "close", "code": 4003, "reason": "token revoked"}
    # Refused at once (a 200 here would be a stream: its body never ends within the timeout).
    resp = await service.client.get(
        f"{PATH}?token={token}", headers={"Last-Event-ID": "1"}, timeout=aiohttp.ClientTimeout(total=10)
    )
    assert await _error(resp) == (401, "invalid_token")
    await _until(lambda: service.app[HUB].connections_of("ivan") == 0)


async def test_the_stream_closes_4001_when_its_token_expires(service: Service) -> None:
    token = service.app[TOKENS].mint("jane", 2).token
    async with stream(service, "jane", token=token) as sse:
        welcome = (await sse.frames_until("welcome"))[-1].frame()
        assert welcome["token_expires_at"] is not None
        (close,) = await sse.until_end(timeout=5)
        assert close.frame()["code"] == 4001


async def test_acks_over_http_count_as_delivered(service: Service) -> None:
    sent = [await service.send("kim", f"n{i}") for i in range(3)]
    token = service.token("kim")
    async with stream(service, "kim", token=token) as sse:
        # No cursor: what was never delivered (acknowledged) comes, then the welcome.
        assert len(await sse.frames_until("welcome")) == 4
    ack = await service.client.post(
        "/v1/users/kim/notifications/ack",
        json={"ids": [sent[0]["id"], sent[1]["id"], "not-an-id-of-kim"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ack.status == 200, await ack.text()
    assert sorted((await ack.json())["ids"]) == sorted([sent[0]["id"], sent[1]["id"]])
    async with stream(service, "kim") as sse:
        events = await sse.frames_until("welcome")
        assert [e.frame()["id"] for e in events[:-1]] == [sent[2]["id"]]
    # Only the user's own token (or an API key), with the JSON error shape.
    other = {"Authorization": f"Bearer {service.token('lena')}"}
    forbidden = await service.client.post(
        "/v1/users/kim/notifications/ack", json={"ids": ["x"]}, headers=other
    )
    assert await _error(forbidden) == (403, "forbidden")
    bad = await service.client.post(
        "/v1/users/kim/notifications/ack", json={"ids": []}, headers=service.auth()
    )
    assert await _error(bad) == (422, "validation_failed")
    anonymous = await service.client.post("/v1/users/kim/notifications/ack", json={"ids": ["x"]})
    assert await _error(anonymous) == (401, "credentials_required")


async def test_shutdown_closes_streams_1001(make_service: Callable[..., Awaitable[Service]]) -> None:
    service = await make_service()
    async with stream(service, "lou") as sse:
        await sse.frames_until("welcome")
        closing = asyncio.create_task(service.client.server.close())
        (close,) = await sse.until_end()
        assert close.frame()["code"] == 1001
        await closing


def _non_reading_stream(port: int, token: str) -> socket.socket:
    """Opens the stream and never reads again: a 4 KiB receive window fills at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {PATH}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


async def test_a_stream_that_is_not_read_is_dropped_with_bounded_memory(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    service = await make_service(ws_write_timeout_seconds=1.0)
    hub = service.app[HUB]
    port = service.client.port
    assert port is not None
    stalled = await asyncio.to_thread(_non_reading_stream, port, service.token("mia"))
    try:
        await _until(lambda: hub.connections_of("mia") == 1)
        (conn,) = [c for c in hub.iter_connections() if c.user_id == "mia"]
        blob = {"note": "s" * 3000}
        peak = 0
        for batch in range(4):
            drafts = [
                {"user_id": "mia", "title": f"n{batch}-{i}", "message": "m", "data": blob} for i in range(200)
            ]
            resp = await service.client.post(
                "/v1/notifications", json={"notifications": drafts}, headers=service.auth()
            )
            assert resp.status == 201
            peak = max(peak, conn.queued_bytes)
        # The queue never held more than its bound, and the stream was let go.
        assert peak <= service.settings.ws_send_queue_bytes
        await _until(lambda: hub.connections_of("mia") == 0, timeout=10)
        # Dropped by its write timeout (1013), or by the kernel first: unacknowledged data for as
        # long is a dead peer (TCP_USER_TIMEOUT, which the stream sets to the write timeout).
        assert sum(hub.counters.closes.get(code, 0) for code in (1013, 1006)) == 1, hub.counters.closes
        # Nothing was lost: every notification is still undelivered, for the next connection.
        store = service.app[STORE]
        left = await store.notifications_for(
            "mia", after_seq=0, upto_seq=await store.last_seq(), limit=1000, undelivered_only=True
        )
        assert len(left) == 800
    finally:
        stalled.close()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_a_client_that_leaves_is_let_go_before_the_next_heartbeat(
    launcher: Launcher, tmp_path: Path
) -> None:
    # A real run.py: aiohttp's test server cancels a handler whose client left, the real one does not.
    server = await launcher.start(tmp_path / "gone.sqlite3", env=child_env(DIAGNOXIX_SECRET_KEY=SECRET))
    token = TokenIssuer(SECRET, default_ttl=600, max_ttl=600).mint("noor").token
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        resp = await http.get(f"{server.url}{PATH}?token={token}")
        assert resp.status == 200
        await SseReader(resp).frames_until("welcome")
        assert (await (await http.get(f"{server.url}/v1/ws/stats")).json())["connections"] == 1
        resp.close()
        left = time.monotonic()
        while (await (await http.get(f"{server.url}/v1/ws/stats")).json())["connections"]:
            assert time.monotonic() - left < 5, "the stream outlived its client"
            await asyncio.sleep(0.1)
    # The heartbeat (15 s by default) would have found out much later.
    assert time.monotonic() - left < 3
