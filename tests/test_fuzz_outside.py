"""An outside tester's findings: inputs a client controls that the server answers with a 5xx, a
1011 close or an error-level log line with a traceback (or that put a credential in the log).

Each test runs the real server (`run.py`, JSON logs on stderr, its own SQLite file) and sends one
kind of bad input the way any client on the network can: raw bytes where a library would refuse
to send them. The product promise is a clear 4xx in the JSON error shape (HTML pages on the
dashboard), an error frame or a policy close on a socket, and a log without errors for a client's
mistake. The last test is a bounded fuzz of every documented route that holds today.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp

from diagnoxix.config import Settings

from .api_routes import BODIES, sweep_routes
from .processes import Launcher, Server
from .raw_http import (
    WS_UPGRADE,
    add_admin,
    assert_json_error,
    exchange,
    log_errors,
    mint_token,
    raw_request,
    settle,
    sign_in,
    start_with_key,
)


async def _token(server: Server, key: str) -> str:
    return str((await mint_token(server, key))["token"])


# -- 1. A non-UTF-8 byte in an API key -------------------------------------------------------


async def test_an_api_key_with_a_non_utf8_byte_is_a_401_not_a_500(launcher: Launcher, tmp_path: Path) -> None:
    """`Authorization: Bearer dxn_<0xFF>_x`: aiohttp keeps the byte as a lone surrogate, which
    SQLite cannot bind (find_api_key) nor sha256 hash (the secret part). Today: 500 and an
    `api.unhandled` traceback per request, and neither the per-address request limit (skipped
    for `Bearer dxn_`) nor the failed-credentials limit (counts 401s only) ever stops it."""
    server, _ = await start_with_key(launcher, tmp_path)
    for credential in (b"dxn_\xff_x", b"dxn_abc_\xff"):
        request = raw_request(
            server, "GET", b"/v1/presence", b"Authorization: Bearer " + credential + b"\r\n"
        )
        status, head, body = await exchange(server, request)
        assert_json_error(status, head, body, {400, 401})
    await settle()
    assert log_errors(server) == []


# -- 2. A non-UTF-8 byte in a connection token (HTTP, SSE, WebSocket handshake) --------------


async def test_a_connection_token_with_a_non_utf8_byte_is_a_401_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A token with a byte aiohttp keeps as a lone surrogate reaches PyJWT, whose
    `token.encode("utf-8")` raises UnicodeEncodeError (not an InvalidTokenError). Today: 500 and
    a traceback on every route that takes a user's token, the SSE stream and the socket upgrade."""
    server, _ = await start_with_key(launcher, tmp_path)
    requests = [
        raw_request(server, "GET", b"/v1/users/u1/unread-count", b"Authorization: Bearer \xff\r\n"),
        raw_request(server, "GET", b"/v1/sse/notifications", b"Authorization: Bearer \xff\r\n"),
        raw_request(
            server,
            "GET",
            b"/v1/ws/notifications",
            WS_UPGRADE + b"Sec-WebSocket-Protocol: diagnoxix.v1, bearer.\xff\r\n",
        ),
    ]
    for request in requests:
        status, head, body = await exchange(server, request)
        assert_json_error(status, head, body, {400, 401})
    await settle()
    assert log_errors(server) == []


# -- 3. The in-band token refresh with a lone surrogate ----------------------------------------


async def test_a_token_frame_with_a_lone_surrogate_gets_an_error_frame_not_1011(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`{"type": "token", "token": "\\ud800"}` on a v1 socket. Today: the socket is closed 1011
    ("internal error") and `ws.frame_failed` is logged with a traceback (same PyJWT encode)."""
    server, key = await start_with_key(launcher, tmp_path)
    token = await _token(server, key)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.ws_url}?token={token}&since=0", protocols=("diagnoxix.v1",)) as ws,
    ):
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await ws.send_str('{"type": "token", "token": "\\ud800", "request_id": "r1"}')
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        frame = json.loads(msg.data)
        assert frame["type"] == "error", frame
        assert frame["error"]["code"] == "invalid_token", frame
    await settle()
    assert log_errors(server) == []


# -- 4. A request_id with a lone surrogate -----------------------------------------------------


async def test_a_request_id_with_a_lone_surrogate_is_ignored_not_a_1011(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`request_id` is echoed in the reply; one holding a lone surrogate (valid JSON, 1-64
    characters) makes the reply unencodable. Today: `{"type": "ping", "request_id": "\\ud800"}`
    closes the socket 1011 and logs `ws.frame_failed` with a traceback. docs/protocol.md: an odd
    request_id is ignored."""
    server, key = await start_with_key(launcher, tmp_path)
    token = await _token(server, key)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.ws_url}?token={token}&since=0", protocols=("diagnoxix.v1",)) as ws,
    ):
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await ws.send_str('{"type": "ping", "request_id": "\\ud800"}')
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        assert json.loads(msg.data)["type"] in {"pong", "error"}
    await settle()
    assert log_errors(server) == []


# -- 5. An Origin that is no URL (patient socket and SSE) ------------------------------------


async def test_an_unparsable_origin_on_the_socket_or_sse_is_a_403_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`Origin: http://[` makes `urlsplit` raise ValueError ("Invalid IPv6 URL") in
    ws/origin.py. Today: 500 and `api.unhandled` with a traceback, before any credential check."""
    server, key = await start_with_key(launcher, tmp_path)
    token = (await _token(server, key)).encode()
    requests = [
        raw_request(
            server, "GET", b"/v1/ws/notifications?token=" + token, WS_UPGRADE + b"Origin: http://[\r\n"
        ),
        raw_request(server, "GET", b"/v1/sse/notifications?token=" + token, b"Origin: http://[\r\n"),
    ]
    for request in requests:
        status, head, body = await exchange(server, request)
        assert_json_error(status, head, body, {400, 403})
    await settle()
    assert log_errors(server) == []


# -- 6. A long static file name ------------------------------------------------------------


async def test_a_static_file_name_past_255_bytes_is_a_404_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`GET /static/aaa…` (300 characters): aiohttp's static handler lets OSError ENAMETOOLONG
    out of `Path.is_dir()`. Today: 500 and a traceback (`api.unhandled`; on
    `/dashboard/static/` `dashboard.unhandled`)."""
    server, _ = await start_with_key(launcher, tmp_path)
    for prefix in (b"/static/", b"/dashboard/static/"):
        status, _, body = await exchange(server, raw_request(server, "GET", prefix + b"a" * 300))
        assert status in {400, 403, 404, 414}, (prefix, status, body[:200])
    await settle()
    assert log_errors(server) == []


# -- 7. A body whose Content-Encoding does not decode ----------------------------------------


async def test_a_body_that_is_not_the_gzip_or_deflate_it_claims_is_a_400_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`Content-Encoding: gzip` (or deflate) with a body that is not: aiohttp raises
    RequestPayloadError from `request.read()`. Today: 500 and two tracebacks per request
    (`api.unhandled`, then aiohttp.server's "Unhandled exception"). br and zstd are a 400."""
    server, key = await start_with_key(launcher, tmp_path)
    for encoding in (b"gzip", b"deflate"):
        headers = (
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
            + b"Content-Encoding: "
            + encoding
            + b"\r\n"
        )
        request = raw_request(server, "POST", b"/v1/notifications", headers, b"not compressed")
        status, head, body = await exchange(server, request)
        assert_json_error(status, head, body, {400, 415})
    await settle()
    assert log_errors(server) == []


# -- 8. The dashboard's sign-in form, undecodable ----------------------------------------------


async def test_a_sign_in_form_that_does_not_decode_is_refused_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """POST /dashboard/login (no sign-in needed; Origin is the server's own, as curl can say):
    a urlencoded body with a raw 0xFF byte (UnicodeDecodeError), a charset Python does not know
    (LookupError), a multipart part without a name (ValueError). Today: each a 500 page and a
    `dashboard.unhandled` traceback."""
    server, _ = await start_with_key(launcher, tmp_path)
    origin = f"Origin: {server.url}\r\n".encode()
    form = b"Content-Type: application/x-www-form-urlencoded"
    multipart = b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--\r\n"
    requests = [
        raw_request(server, "POST", b"/dashboard/login", origin + form + b"\r\n", b"csrf_token=\xff"),
        raw_request(server, "POST", b"/dashboard/login", origin + form + b"; charset=nope\r\n", b"a=b"),
        raw_request(
            server,
            "POST",
            b"/dashboard/login",
            origin + b"Content-Type: multipart/form-data; boundary=B\r\n",
            multipart,
        ),
    ]
    for request in requests:
        status, _, body = await exchange(server, request)
        assert 400 <= status < 500, (status, body[:200])
    await settle()
    assert log_errors(server) == []


async def test_a_non_ascii_csrf_token_is_a_403_not_a_500(launcher: Launcher, tmp_path: Path) -> None:
    """POST /dashboard/login with `csrf_token=é` and the pre-login cookie the sign-in page set:
    `hmac.compare_digest` raises TypeError for non-ASCII str. Today: 500 and a traceback."""
    server, _ = await start_with_key(launcher, tmp_path)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{server.url}/dashboard/login") as page:
            assert page.status == 200
        async with http.post(
            f"{server.url}/dashboard/login",
            data={"csrf_token": "é", "username": "a", "password": "b"},
            headers={"Origin": server.url},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 403, resp.status
    await settle()
    assert log_errors(server) == []


async def test_an_unparsable_origin_on_a_dashboard_form_or_live_socket_is_a_403_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`Origin: http://[` at dashboard/security.py's `same_origin` (every form, the live socket).
    Today: a 500 page and `dashboard.unhandled` with a traceback."""
    server, _ = await start_with_key(launcher, tmp_path)
    requests = [
        raw_request(
            server,
            "POST",
            b"/dashboard/login",
            b"Origin: http://[\r\nContent-Type: application/x-www-form-urlencoded\r\n",
            b"a=b",
        ),
        raw_request(server, "GET", b"/dashboard/live", WS_UPGRADE + b"Origin: http://[\r\n"),
    ]
    for request in requests:
        status, _, body = await exchange(server, request)
        assert status in {400, 401, 403}, (status, body[:200])
    await settle()
    assert log_errors(server) == []


async def test_a_session_cookie_with_a_non_utf8_byte_is_a_fresh_session_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`Cookie: dxn_dashboard=<0xFF>`: aiohttp-session's `cookie.encode("utf-8")` raises
    UnicodeEncodeError (only InvalidToken is caught). Today: every dashboard page, the sign-in
    page too, answers 500 in the API's JSON shape, with two tracebacks per request."""
    server, _ = await start_with_key(launcher, tmp_path)
    for path in (b"/dashboard/login", b"/dashboard/"):
        status, _, body = await exchange(
            server, raw_request(server, "GET", path, b"Cookie: dxn_dashboard=\xff\r\n")
        )
        assert status in {200, 303, 400}, (path, status, body[:200])
    await settle()
    assert log_errors(server) == []


# -- 9. The staff live socket, watching a lone surrogate --------------------------------------


async def test_the_live_socket_keeps_pushing_after_a_watch_of_a_lone_surrogate(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A signed-in page's live socket sends `{"type": "watch", "id": "\\ud800"}` (valid JSON, 1-64
    characters). The pusher task dies on the store read (UnicodeEncodeError), so the page gets
    no more snapshots, silently; when the socket closes, `dashboard.unhandled` is logged with a
    traceback. Expected: the odd id is ignored (or the watch answers nothing found)."""
    db = tmp_path / "notify.sqlite3"
    server = await launcher.start(db)
    await asyncio.to_thread(add_admin, db)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await sign_in(http, server)
        async with http.ws_connect(f"{server.url}/dashboard/live", headers={"Origin": server.url}) as ws:
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "stats"
            await ws.send_str('{"type": "watch", "id": "\\ud800"}')
            snapshots = 0
            try:
                while snapshots < 2:
                    msg = await ws.receive(timeout=4)
                    assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
                    snapshots += 1
            except TimeoutError:
                pass
            assert snapshots == 2, "the live socket stopped pushing snapshots"
    await asyncio.sleep(0.5)
    assert log_errors(server) == []


# -- 10. A credential in the subprotocol list lands in the log --------------------------------


async def test_offered_subprotocols_never_reach_the_log(launcher: Launcher, tmp_path: Path) -> None:
    """A socket that authenticates with `?token=` and also offers a subprotocol the server does
    not pick (here `Bearer.<token>`: the server only knows lowercase `bearer.`) is upgraded, and
    aiohttp logs "Client protocols [...] don't overlap" at warning level, quoting every offered
    protocol verbatim: a connection token is written to the log."""
    server, key = await start_with_key(launcher, tmp_path)
    token, other = await _token(server, key), await _token(server, key)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.ws_url}?token={token}", protocols=(f"Bearer.{other}",)) as ws,
    ):
        await ws.close()
    await settle()
    log = server.stderr()
    assert other.split(".")[2] not in log


# -- A bounded fuzz of every documented route (holds today) ----------------------------------

WEIRD: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    2**70,
    "",
    " ",
    "\ud800",
    "\x00",
    "a" * 5000,
    [],
    {},
    ["\ud800"],
    {"\ud800": 1},
    [[[[]]]],
    "https://[",
    "../..",
    "*",
]
RAW_NUMBERS = ["1e400", "-1e400", "-0", "1" * 5000]
ODD_QUERY = "?limit=1e3&before=-1&since=x&after=%00&type=%00&unread=maybe&key=%00"


def _bodies(base: dict[str, Any], rng: random.Random) -> list[str]:
    mutated: list[Any] = [base, [base], "text", {"notifications": [base, base]}]
    for name in base:
        mutated += [{**base, name: value} for value in rng.sample(WEIRD, 6)]
    mutated += [{**base, "extra": value} for value in rng.sample(WEIRD, 3)]
    texts = [json.dumps(body) for body in mutated]
    for name in base:
        texts.append(json.dumps({**base, name: "RAW"}).replace('"RAW"', rng.choice(RAW_NUMBERS)))
    return [*texts, '{"a": 1, "a": 2}', "\ufeff{}", "[" * 3000, "{"]


async def test_fuzzing_every_documented_route_gets_no_5xx_and_no_error_log(
    launcher: Launcher, tmp_path: Path
) -> None:
    """Each route (but the streams) with mutated JSON bodies (wrong types, huge and non-finite
    numbers, lone surrogates, NUL, nesting, duplicate keys, a BOM) and odd query parameters, with
    the API key or a user's token as the route wants. Rate limits off, fixed seed, ~1,500 requests."""
    server, key = await start_with_key(
        launcher,
        tmp_path,
        DIAGNOXIX_RATE_LIMIT="0",
        DIAGNOXIX_AUTH_FAILURE_LIMIT="0",
        DIAGNOXIX_API_KEY_RATE_LIMIT="0",
    )
    token = await _token(server, key)
    rng = random.Random(20261130)
    settings = Settings(db_path=tmp_path / "unused.sqlite3", secret_key="s" * 40)
    failures: list[str] = []
    sent = 0
    async with aiohttp.ClientSession() as http:
        for method, path, url, headers in sweep_routes(settings, key, token):
            for text in _bodies(BODIES.get(path, {"x": 1}), rng):
                target = url + (ODD_QUERY if rng.random() < 0.3 else "")
                data = text.encode("utf-8", "surrogatepass")
                async with http.request(method, server.url + target, data=data, headers=headers) as resp:
                    sent += 1
                    if resp.status >= 500:
                        failures.append(f"{resp.status} {method} {target} {text[:100]!r}")
    await settle()
    assert sent > 500
    assert failures == []
    assert log_errors(server) == []


async def test_a_metrics_token_with_a_non_utf8_byte_is_refused_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`/metrics` compares the presented bearer token with its own: one holding a byte that is
    not UTF-8 could not be encoded for the comparison (500 and a traceback)."""
    server, _ = await start_with_key(launcher, tmp_path, DIAGNOXIX_METRICS_TOKEN="m" * 40)
    request = raw_request(server, "GET", b"/metrics", b"Authorization: Bearer \xff" + b"m" * 39 + b"\r\n")
    status, _, body = await exchange(server, request)
    assert status in {401, 403}, (status, body[:200])
    await settle()
    assert log_errors(server) == []
