"""An outside tester's second round: authorization across users, slow and flooding clients,
outbound requests (SSRF), secrets in logs, and hostile text reaching PostgreSQL.

Each finding has one focused test that fails on the main branch it was found on; the tests after
them are bounded checks of what held. Every test runs the real server (`run.py`, JSON logs on
stderr) and talks to it the way any client on the network can.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from cryptography.hazmat.primitives.asymmetric import ec

from diagnoxix.config import Settings

from .api_routes import BODIES, PATH_PARAMETERS, STREAMS, documented_routes, needs_api_key, sweep_routes
from .processes import Launcher, Server, child_env, create_api_key, last_line, run_cli
from .push_service import Browser
from .raw_http import (
    ADMIN,
    add_admin,
    exchange,
    log_entries,
    log_errors,
    mint_token,
    settle,
    sign_in,
    start_with_key,
)


async def _start_pg(launcher: Launcher, tmp_path: Path, dsn: str, **env: str) -> tuple[Server, str]:
    server = await launcher.start(tmp_path / "unused.sqlite3", env=child_env(DIAGNOXIX_STORE=dsn, **env))
    done = await run_cli("apikey", "create", "fuzz2", "--store", dsn)
    assert done.returncode == 0, done.stderr
    return server, last_line(done.stdout)


async def _send(server: Server, key: str, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/v1/notifications", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        return dict((await resp.json())["notification"])


def _browser(endpoint: str) -> Browser:
    """A push subscription as a browser makes it: a real P-256 key, so a push can be encrypted."""
    return Browser("b", endpoint, ec.generate_private_key(ec.SECP256R1()), os.urandom(16))


def _post(server: Server, target: str, headers: bytes, body: bytes) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
        + headers
        + b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


async def _open_v1(ws: aiohttp.ClientWebSocketResponse) -> None:
    """A v1 socket's start: hello, then frames up to the welcome."""
    await ws.send_str(json.dumps({"type": "hello"}))
    while json.loads((await ws.receive(timeout=5)).data).get("type") != "welcome":
        pass


async def _ask(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> dict[str, Any] | None:
    """The reply to `frame` (by its request_id), or None if the socket closed instead."""
    rid = f"r{random.randrange(10**9)}"
    await ws.send_str(json.dumps({**frame, "request_id": rid}))
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return None
        reply = json.loads(msg.data)
        if reply.get("request_id") == rid:
            return dict(reply)


# -- 1. A push subscription's User-Agent is bound to the store as it came ------------------------


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_a_push_subscription_whose_user_agent_is_not_utf8_fails_no_one_elses_writes(
    launcher: Launcher, tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    """`POST /v1/users/{me}/push-subscriptions` keeps the request's User-Agent (the socket's
    device record cleans it, `edge.clients.stored_user_agent`; this route does not). A byte that is not
    UTF-8 reaches the store as a lone surrogate, which SQLite cannot bind: UnicodeEncodeError is
    not an `sqlite3.Error`, so the writer rolls back the whole group-commit batch. Today: 503 for
    the patient, a `store.batch_failed` traceback, and every other write in the same batch (other
    clinics' sends, other patients' read marks) fails with it. Any patient with a token can do
    this as often as they like. On PostgreSQL the driver refuses it (DataError): 503 and a
    `store.write_failed` warning (the writer retries the batch's other writes alone)."""
    limits = {"DIAGNOXIX_RATE_LIMIT": "0", "DIAGNOXIX_API_KEY_RATE_LIMIT": "0"}
    if store == "sqlite":
        server, key = await start_with_key(launcher, tmp_path, **limits)
    else:
        server, key = await _start_pg(launcher, tmp_path, request.getfixturevalue("pg_dsn"), **limits)
    token = (await mint_token(server, key, "pat1"))["token"]

    def register(n: int) -> bytes:
        body = json.dumps(_browser(f"https://fcm.googleapis.com/fcm/send/ua-{n}").subscription()).encode()
        headers = f"Authorization: Bearer {token}\r\n".encode() + b"User-Agent: Mozilla/5.0 \xff\xfe\r\n"
        return _post(server, "/v1/users/pat1/push-subscriptions", headers, body)

    status, _, body = await exchange(server, register(0))
    assert status in {201, 400, 422}, (status, body[:300])

    # Meanwhile, other clinics' sends to other patients must all be stored.
    async with aiohttp.ClientSession() as http:

        async def send(n: int) -> int:
            note = {"user_id": f"other{n}", "title": "Your result is ready", "message": "Open the portal"}
            async with http.post(
                f"{server.url}/v1/notifications", json=note, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                return resp.status

        results = await asyncio.gather(
            *(send(n) for n in range(40)), *(exchange(server, register(n)) for n in range(1, 6))
        )
    sends = results[:40]
    assert sends.count(201) == 40, sends
    await settle()
    assert log_errors(server) == []


# -- 2. A schedule id with a NUL on PostgreSQL ------------------------------------------------------


async def test_a_schedule_id_with_a_nul_is_a_404_on_postgresql_not_a_503(
    launcher: Launcher, tmp_path: Path, pg_dsn: str
) -> None:
    """`GET|DELETE /v1/scheduled/{schedule_id}` take "any text" as the id (`api.scheduled`) and
    ask the store; `%00` decodes to NUL, which PostgreSQL's text refuses. Today: 503
    `store_unavailable` with `Retry-After: 5` ("retry shortly"), so a client retries forever a
    request that can never succeed (SQLite answers 404)."""
    server, key = await _start_pg(launcher, tmp_path, pg_dsn)
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        for method in ("GET", "DELETE"):
            async with http.request(
                method, yarl_url(f"{server.url}/v1/scheduled/a%00b"), headers=auth
            ) as resp:
                assert resp.status in {400, 404}, (method, resp.status, await resp.text())
    await settle()
    assert log_errors(server) == []


# -- 3. NUL and lone surrogates reaching PostgreSQL through every route ----------------------------

NUL, SURROGATE = "a\x00b", "a\ud800b"
PATH_BAD = ("a%00b", "a%ED%A0%80b")
QUERY_BAD = "?limit={0}&before={0}&type={0}&unread={0}&key={0}&cursor={0}&status={0}&since={0}&user_id={0}"


# Found in this round, each with its own test above: left out here so this sweep shows what holds.
KNOWN = {"/v1/scheduled/a%00b"}


def _poisoned(base: dict[str, Any], bad: str) -> list[dict[str, Any]]:
    """The body with each field (and each string inside a list or object field) set to `bad`."""
    out = []
    for name, value in base.items():
        out.append({**base, name: bad})
        if isinstance(value, list):
            out.append({**base, name: [bad]})
        if isinstance(value, dict):
            out.append({**base, name: {bad: bad}})
    out.append({**base, "data": {"k": bad, bad: 1}})
    return out


def _targets(url: str, path: str) -> list[str]:
    """The URL with each path parameter replaced by a NUL or a surrogate's bytes, and with a
    query of them."""
    found = [url + QUERY_BAD.format(bad) for bad in PATH_BAD]
    for name in PATH_PARAMETERS:
        if name not in path:
            continue
        for bad in PATH_BAD:
            target = path
            for other, value in PATH_PARAMETERS.items():
                target = target.replace(other, bad if other == name else value)
            found.append(target)
    return found


async def test_held_nul_and_lone_surrogates_in_every_field_never_reach_postgresql_as_a_5xx(
    launcher: Launcher, tmp_path: Path, pg_dsn: str
) -> None:
    """Every documented route but the streams on the PostgreSQL store: each JSON field, path
        segment and query value set to a NUL or a lone surrogate (PostgreSQL's text cannot hold
        the one, UTF-8 cannot carry the other), Idempotency-Key and User-Agent headers with bytes
        that are not UTF-8, and socket frames with both (but the two found above: a schedule id with
    a NUL, a push subscription's User-Agent that is not UTF-8). A clear 4xx (or the input ignored), never a
        5xx, never an error in the log. Rate limits off; about 600 requests."""
    server, key = await _start_pg(
        launcher,
        tmp_path,
        pg_dsn,
        DIAGNOXIX_RATE_LIMIT="0",
        DIAGNOXIX_AUTH_FAILURE_LIMIT="0",
        DIAGNOXIX_API_KEY_RATE_LIMIT="0",
    )
    token = (await mint_token(server, key, "u1"))["token"]
    settings = Settings(db_path=tmp_path / "unused2.sqlite3", secret_key="s" * 40)
    failures: list[str] = []
    sent = 0
    async with aiohttp.ClientSession() as http:
        for method, path, url, headers in sweep_routes(settings, key, token):
            base = BODIES.get(path, {"x": 1})
            cases = [(url, body) for bad in (NUL, SURROGATE) for body in _poisoned(base, bad)]
            cases += [(target, base) for target in _targets(url, path)]
            for target, body in cases:
                if target in KNOWN:
                    continue
                data = json.dumps(body).encode("utf-8", "surrogatepass")
                async with http.request(
                    method, yarl_url(server.url + target), data=data, headers=headers
                ) as resp:
                    sent += 1
                    if resp.status >= 500:
                        failures.append(f"{resp.status} {method} {target} {json.dumps(body)[:80]}")
    # Headers a client library would not send: raw bytes (a fresh token: the sweep revoked the
    # user's devices).
    token = (await mint_token(server, key, "u1"))["token"]
    sub = json.dumps(_browser("https://fcm.googleapis.com/fcm/send/pg-ua").subscription()).encode()
    note = json.dumps({"user_id": "u1", "title": "t"}).encode()
    for name, value, target, auth, raw_body in (
        (b"Idempotency-Key", b"k\xff", "/v1/notifications", key, note),
        (b"Idempotency-Key", b"k\xed\xa0\x80", "/v1/broadcasts", key, json.dumps({"title": "t"}).encode()),
        (b"User-Agent", b"Mozilla \x01\x7f", "/v1/users/u1/push-subscriptions", token, sub),
    ):
        raw_headers = f"Authorization: Bearer {auth}\r\n".encode() + name + b": " + value + b"\r\n"
        status, _, answer = await exchange(server, _post(server, target, raw_headers, raw_body))
        sent += 1
        if status >= 500:
            failures.append(f"{status} POST {target} {name.decode()}: {value!r} {answer[:120]!r}")
    # Socket frames.
    # Socket frames (a fresh token: the sweep above revoked the user's devices).
    token = (await mint_token(server, key, "u1"))["token"]
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.ws_url}?token={token}", protocols=("diagnoxix.v1",)) as ws,
    ):
        await _open_v1(ws)
        for bad in (NUL, SURROGATE):
            for frame in (
                {"type": "read", "ids": [bad]},
                {"type": "ack", "ids": [bad]},
                {"type": "history", "filter_type": bad},
                {"type": "acknowledge", "id": bad},
            ):
                sent += 1
                if await _ask(ws, frame) is None:
                    failures.append(f"socket closed on {frame}: {ws.close_code}")
                    break
    await settle()
    assert sent > 300
    assert failures == [], "\n".join(failures)
    assert log_errors(server) == []


def yarl_url(text: str) -> yarl.URL:
    return yarl.URL(text, encoded=True)


# -- What held ------------------------------------------------------------------------------------


async def test_held_a_patients_token_never_reaches_another_patients_data(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A's token on every route that takes a user's token, pointed at B (and at `B` spelt in
    another case): 403; B's notification ids (plain and critical) through A's routes and socket:
    404 or ignored; A's token after A's device is revoked: 401."""
    server, key = await start_with_key(launcher, tmp_path)
    a, b = await mint_token(server, key, "pat-a"), await mint_token(server, key, "pat-b")
    plain = await _send(server, key, {"user_id": "pat-b", "title": "B's result", "message": "m"})
    critical = await _send(
        server, key, {"user_id": "pat-b", "title": "B critical", "message": "m", "priority": "critical"}
    )
    settings = Settings(db_path=tmp_path / "unused.sqlite3", secret_key="s" * 40)
    bad: list[str] = []
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {a['token']}"}
        for method, path, _url, operation in documented_routes(settings):
            if "{user_id}" not in path or needs_api_key(operation) or path in STREAMS:
                continue
            for victim in ("pat-b", "PAT-A", "pat-a."):
                target = path.replace("{user_id}", victim)
                for name, value in (
                    ("{token_id}", b["token_id"]),
                    ("{notification_id}", plain["id"]),
                    ("{subscription_id}", "01234567-89ab-cdef-0123-456789abcdef"),
                ):
                    target = target.replace(name, value)
                async with http.request(
                    method, server.url + target, json=BODIES.get(path), headers=auth
                ) as r:
                    if r.status != 403:
                        bad.append(f"{r.status} {method} {target}")
        for method, target, body in (
            ("GET", f"/v1/users/pat-a/notifications/{plain['id']}", None),
            ("GET", f"/v1/notifications/{critical['id']}/acknowledgement", None),
            ("POST", f"/v1/notifications/{critical['id']}/acknowledgement", {}),
            ("POST", f"/v1/notifications/{plain['id']}/actions/confirm", {}),
        ):
            async with http.request(method, server.url + target, json=body, headers=auth) as r:
                if r.status != 404:
                    bad.append(f"{r.status} {method} {target}")
        for route in ("read", "ack"):
            async with http.post(
                f"{server.url}/v1/users/pat-a/notifications/{route}",
                json={"ids": [plain["id"]]},
                headers=auth,
            ) as r:
                if (await r.json())["ids"] != []:
                    bad.append(f"{route} confirmed B's id")
        async with http.ws_connect(f"{server.ws_url}?token={a['token']}", protocols=("diagnoxix.v1",)) as ws:
            await _open_v1(ws)
            for frame in ({"type": "read", "ids": [plain["id"]]}, {"type": "ack", "ids": [plain["id"]]}):
                reply = await _ask(ws, frame)
                if reply is None or reply.get("ids") != []:
                    bad.append(f"socket {frame['type']} confirmed B's id: {reply}")
            reply = await _ask(ws, {"type": "acknowledge", "id": critical["id"]})
            if reply is None or reply.get("type") != "error":
                bad.append(f"socket acknowledged B's critical copy: {reply}")
            reply = await _ask(ws, {"type": "history"})
            if reply is None or reply.get("notifications"):
                bad.append(f"A's history holds B's notifications: {reply}")
        async with http.delete(f"{server.url}/v1/users/pat-a/devices/{a['token_id']}", headers=auth) as r:
            assert r.status == 200
        async with http.get(f"{server.url}/v1/users/pat-a/unread-count", headers=auth) as r:
            if r.status != 401:
                bad.append(f"revoked token: {r.status}")
        async with http.get(
            f"{server.url}/v1/users/pat-b/unread-count", headers={"Authorization": f"Bearer {b['token']}"}
        ) as r:
            assert (await r.json())["unread"] == 2  # B's own state untouched by all of the above
    assert bad == []
    await settle()
    assert log_errors(server) == []


async def test_held_no_password_token_key_or_idempotency_key_reaches_the_log(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A password typed as the user name and a wrong one, a token in the SSE query through a
    trusted proxy, an API key with a wrong secret, an Idempotency-Key: none in the server's log."""
    db = tmp_path / "notify.sqlite3"
    server = await launcher.start(db, env=child_env(DIAGNOXIX_TRUSTED_PROXIES="127.0.0.1"))
    _, key = await create_api_key(db, "fuzz2")
    add_admin(db)
    minted = await mint_token(server, key, "pat1")
    secrets_sent = [
        "Hunter2-typed-as-name",
        "Wrong-Pass-123456",
        minted["token"],
        key.split("_", 2)[2],  # dxn_<id>_<secret>: the secret may hold "_" itself
        "dxn_abc_NotTheRightSecret000",
        "idem-SECRET-77",
    ]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for username, password in (("Hunter2-typed-as-name", "x"), (ADMIN, "Wrong-Pass-123456")):
            await sign_in(http, server, username, password, expect=401)
        async with http.get(
            f"{server.url}/v1/sse/notifications?token={minted['token']}",
            headers={"X-Forwarded-For": "203.0.113.7", "Accept": "text/event-stream"},
            timeout=aiohttp.ClientTimeout(total=1),
        ) as resp:
            assert resp.status == 200
        async with http.get(
            f"{server.url}/v1/sse/notifications?token={minted['token']}",
            headers={"X-Forwarded-For": "203.0.113.7", "Last-Event-ID": "not-a-seq"},
        ) as resp:
            assert resp.status == 400  # logged by the access log, path and all
        async with http.get(
            f"{server.url}/v1/presence",
            headers={
                "Authorization": "Bearer dxn_abc_NotTheRightSecret000",
                "X-Forwarded-For": "203.0.113.7",
            },
        ) as resp:
            assert resp.status == 401
        async with http.post(
            f"{server.url}/v1/notifications",
            json={"user_id": "pat1", "title": "t", "message": "m"},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "idem-SECRET-77"},
        ) as resp:
            assert resp.status == 201
    await asyncio.sleep(1.0)
    log = server.stderr()
    assert any(e.get("remote") == "203.0.113.7" for e in log_entries(server))  # the proxy was believed
    assert [s for s in secrets_sent if s in log] == []


# -- 4. A slow body is never let go ------------------------------------------------------------------


async def test_a_request_whose_body_trickles_in_is_let_go_within_the_header_timeout(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`DIAGNOXIX_HTTP_HEADER_TIMEOUT`: "a connection must send a whole request within this time"
    (docs/security.md: slowloris). It is aiohttp's keep-alive timeout, which closes a connection
    only while it waits for a request's head: once the head is in, the handler reads the body
    with no deadline at all. Today: the sign-in form (no credential needed; any Origin header
    the client writes itself) with `Content-Length: 1000` and a byte every 0.25 s holds its
    connection and handler for as long as the client likes (500 such per address)."""
    server, _ = await start_with_key(launcher, tmp_path, DIAGNOXIX_HTTP_HEADER_TIMEOUT="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST /dashboard/login HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nOrigin: {server.url}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    let_go_after = None
    answer = b""
    try:
        writer.write(head.encode())
        await writer.drain()
        while time.monotonic() - started < 8:
            try:
                writer.write(b"a")
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(1024), 0.25)
            except TimeoutError:
                continue
            except OSError:
                pass
            let_go_after = time.monotonic() - started  # answered or closed
            break
    finally:
        writer.close()
    assert let_go_after is not None, "the connection was still held after 8 s"
    assert let_go_after < 4
    # Answered, not just cut: the client learns why.
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]


async def test_a_push_endpoint_naming_loopback_as_a_number_is_refused_and_gets_no_request(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`DIAGNOXIX_PUSH_HOSTS=*` promises any host, "never a private or loopback address".
    `2130706433`, `127.1`, `0177.0.0.1` and `0` are no address to Python's `ipaddress`, so the
    private-address check could not judge them; they got no connection only because yarl refuses
    them (and `0x7f000001` went through the public-only resolver). They are refused when
    registered (422), and nothing connects."""
    hits: list[float] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(time.monotonic())
        writer.close()

    listener = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        server, key = await start_with_key(
            launcher, tmp_path, DIAGNOXIX_PUSH_HOSTS="*", DIAGNOXIX_PUSH_TIMEOUT="2"
        )
        token = (await mint_token(server, key, "pat1"))["token"]
        registered = []
        async with aiohttp.ClientSession() as http:
            for host in ("2130706433", "127.1", "0177.0.0.1", "0", "0x7f000001"):
                async with http.post(
                    f"{server.url}/v1/users/pat1/push-subscriptions",
                    json=_browser(f"https://{host}:{port}/push/x").subscription(),
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    # Refused outright: a host of digits is no name, and no address written in full.
                    assert resp.status == 422, (host, resp.status, await resp.text())
                    if resp.status == 201:
                        registered.append(host)
        if registered:
            # The patient is offline: the push goes at once.
            await _send(
                server, key, {"user_id": "pat1", "title": "Result", "message": "ready", "priority": "high"}
            )
            deadline = time.monotonic() + 5
            while not hits and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
    finally:
        listener.close()
    assert hits == [], f"the server connected to 127.0.0.1:{port} for endpoints at {registered}"
