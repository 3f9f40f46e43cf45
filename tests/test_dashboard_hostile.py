"""The dashboard against bytes no page of ours sends, the way tests/test_fuzz_outside.py tests the
rest: the real server (`run.py`, JSON logs on stderr), a signed-in staff member, raw requests.

Every form goes through `dashboard.inputs.read_form`, every id from a path or query through its
id helpers: a form in another charset, NUL in a field, a path or a query, an odd address from a
trusted proxy each get a clear 4xx (or the page without the odd value), never a 500 or an error
line in the log. NUL matters most on PostgreSQL, which refuses it in text: those run there too.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from diagnoxix.dashboard.inputs import FORM_MAX_BYTES

from .processes import Launcher, Server, child_env
from .raw_http import (
    ADMIN,
    CSRF_FIELD,
    add_admin,
    exchange,
    log_errors,
    raw_request,
    settle,
    sign_in,
)

FORM = b"Content-Type: application/x-www-form-urlencoded"


async def _start(launcher: Launcher, tmp_path: Path, **extra: str) -> Server:
    db, env = tmp_path / "notify.sqlite3", child_env(**extra)
    server = await launcher.start(db, env=env)
    await asyncio.to_thread(add_admin, db, env)
    return server


async def _sign_in(server: Server) -> tuple[bytes, str]:
    """A signed-in admin: (the `Cookie:` header line to send raw, the session's form token)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await sign_in(http, server)
        cookie = next(c for c in http.cookie_jar if c.key == "dxn_dashboard")
        async with http.get(f"{server.url}/dashboard/keys") as page:
            match = CSRF_FIELD.search(await page.text())
            assert match
    return f"Cookie: dxn_dashboard={cookie.value}\r\n".encode(), match.group(1)


async def _post(server: Server, cookie: bytes, target: bytes, body: bytes, content_type: bytes = FORM) -> int:
    origin = f"Origin: {server.url}\r\n".encode()
    status, _, page = await exchange(
        server, raw_request(server, "POST", target, cookie + origin + content_type + b"\r\n", body)
    )
    assert b"Traceback" not in page
    return status


async def _get(server: Server, cookie: bytes, target: bytes) -> tuple[int, bytes]:
    status, head, _ = await exchange(server, raw_request(server, "GET", target, cookie))
    return status, head


async def test_a_form_in_another_charset_or_multipart_is_refused_before_the_store(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`charset=unicode_escape` decodes `\\ud800` to a lone surrogate, which reached the store (a
    500 and a traceback on the API key form); multipart parts are decoded in the charset each
    names. Both are refused: our pages send urlencoded UTF-8."""
    server = await _start(launcher, tmp_path)
    cookie, token = await _sign_in(server)
    body = f"csrf_token={token}&name=".encode() + rb"\ud800"
    assert await _post(server, cookie, b"/dashboard/keys", body, FORM + b"; charset=unicode_escape") == 400
    multipart = (
        b"--B\r\nContent-Disposition: form-data; name=csrf_token\r\n\r\n" + token.encode() + b"\r\n"
        b"--B\r\nContent-Disposition: form-data; name=name\r\n"
        b"Content-Type: text/plain; charset=unicode_escape\r\n\r\n\\ud800\r\n--B--\r\n"
    )
    content_type = b"Content-Type: multipart/form-data; boundary=B"
    assert await _post(server, cookie, b"/dashboard/keys", multipart, content_type) == 415
    # And the form of our own page still works.
    assert await _post(server, cookie, b"/dashboard/keys", f"csrf_token={token}&name=ok".encode()) == 201
    await settle()
    assert log_errors(server) == []


async def test_an_odd_forwarded_address_at_sign_in_is_hashed_not_a_500(
    launcher: Launcher, tmp_path: Path
) -> None:
    """Behind a trusted proxy the sign-in throttle hashes the forwarded address; a byte that is
    not UTF-8 there (a lone surrogate once decoded) made the hash raise: a 500 for that sign-in."""
    server = await _start(launcher, tmp_path, DIAGNOXIX_TRUSTED_PROXIES="127.0.0.1")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{server.url}/dashboard/login") as page:
            match = CSRF_FIELD.search(await page.text())
            assert match
        cookie = next(c for c in http.cookie_jar if c.key == "dxn_dashboard")
    headers = f"Cookie: dxn_dashboard={cookie.value}\r\n".encode() + b"X-Forwarded-For: \xff\r\n"
    body = f"csrf_token={match.group(1)}&username={ADMIN}&password=wrong".encode()
    assert await _post(server, headers, b"/dashboard/login", body) == 401
    await settle()
    assert log_errors(server) == []


async def test_a_signed_in_next_with_a_control_character_goes_to_the_overview(
    launcher: Launcher, tmp_path: Path
) -> None:
    server = await _start(launcher, tmp_path)
    cookie, _ = await _sign_in(server)
    for target in (b"/dashboard/login?next=/dashboard/%00", b"/dashboard/login?next=/dashboard/%0d%0aX:%20y"):
        status, head = await _get(server, cookie, target)
        assert status == 303, status
        assert b"\r\nLocation: /dashboard/\r\n" in head, head
    await settle()
    assert log_errors(server) == []


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_nul_in_a_form_path_query_or_watch_never_reaches_the_store(
    launcher: Launcher, tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    """`%00` decodes to NUL in every field, path segment and query value; PostgreSQL refuses it
    in text (an error from the driver, a 500 and a traceback). Refused or ignored before it."""
    extra = {} if store == "sqlite" else {"DIAGNOXIX_STORE": request.getfixturevalue("pg_dsn")}
    server = await _start(launcher, tmp_path, **extra)
    cookie, token = await _sign_in(server)
    csrf = f"csrf_token={token}".encode()
    # A field of any form: the API key's name, the webhook's description, the sign-in name.
    assert await _post(server, cookie, b"/dashboard/keys", csrf + b"&name=a%00b") == 400
    webhook = csrf + b"&url=https://example.com/h&events=notification.read&description=%00"
    assert await _post(server, cookie, b"/dashboard/webhooks", webhook) == 400
    # Ids in paths: refused before any lookup.
    for target in (
        b"/dashboard/keys/a%00b/revoke",
        b"/dashboard/webhooks/a%00b/enable",
        b"/dashboard/webhooks/a%00b/delete",
        b"/dashboard/webhooks/dead/a%00b/retry",
        b"/dashboard/notifications/a%00b/retract",
        b"/dashboard/critical/a%00b/acknowledge",
    ):
        assert await _post(server, cookie, target, csrf + b"&reason=why") == 404, target
    for target in (
        b"/dashboard/notifications/a%00b",
        b"/dashboard/critical/a%00b",
        b"/dashboard/users/a%00b",
    ):
        assert (await _get(server, cookie, target))[0] == 404, target
    # A query's id: the page shows, without it.
    assert (await _get(server, cookie, b"/dashboard/send?sent=a%00b"))[0] == 200
    assert (await _get(server, cookie, b"/dashboard/notifications?user=a%00b&type=%00"))[0] == 200
    # The live socket's watch: ignored, and the pushes go on.
    headers = {"Origin": server.url, "Cookie": cookie.decode().removeprefix("Cookie: ").strip()}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.url}/dashboard/live", headers=headers) as ws,
    ):
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "stats"
        await ws.send_str('{"type": "watch", "id": "a\\u0000b"}')
        for _ in range(2):
            msg = await ws.receive(timeout=4)
            assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
    await asyncio.sleep(0.5)
    assert log_errors(server) == []


async def test_an_api_key_name_with_a_line_break_is_refused(launcher: Launcher, tmp_path: Path) -> None:
    """A key's name is a line in the keys table, `run.py apikey list` and the audit log: no
    control character, whichever way it is created."""
    server = await _start(launcher, tmp_path)
    cookie, token = await _sign_in(server)
    csrf = f"csrf_token={token}".encode()
    assert await _post(server, cookie, b"/dashboard/keys", csrf + b"&name=clinic%0Aforged") == 422
    assert await _post(server, cookie, b"/dashboard/keys", csrf + b"&name=clinic") == 201
    await settle()
    assert log_errors(server) == []


async def _status_at_once(server: Server, request: bytes) -> int:
    """The status of the answer to `request`, which must come within 2 s (the server may then
    linger a while, discarding whatever else the client sends, before it closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=2)
    finally:
        writer.close()
    return int(head.split(b" ")[1])


async def test_a_form_body_over_the_dashboard_limit_is_refused_before_it_is_read(
    launcher: Launcher, tmp_path: Path
) -> None:
    """The sign-in form is read before anyone is signed in, and was read up to the API's 4 MiB:
    anyone could make the server hold 4 MiB per connection, waiting up to the header timeout
    for each to arrive. A form body over 256 KiB is a 413 at once, without waiting for it, a
    chunked one a 411; the largest form of ours still goes through."""
    server = await _start(launcher, tmp_path)
    origin = f"Origin: {server.url}\r\n".encode()
    # The head alone, claiming 4 MB that never come: answered at once, not after 15 s.
    head = raw_request(
        server, "POST", b"/dashboard/login", origin + FORM + b"\r\nContent-Length: 4000000\r\n"
    )
    assert await _status_at_once(server, head) == 413
    chunked = raw_request(
        server, "POST", b"/dashboard/login", origin + FORM + b"\r\nTransfer-Encoding: chunked\r\n"
    )
    assert await _status_at_once(server, chunked + b"5\r\nab=cd\r\n0\r\n\r\n") == 411
    # A notification at every limit, in characters of four bytes each: about 100 KB as a form.
    cookie, token = await _sign_in(server)
    fields = {
        "csrf_token": token,
        "target": "user",
        "kind": "custom",
        "user_id": "patient-1",
        "type": "lab_result_ready",
        "title": "\U0001f9ea" * 200,
        "message": "\U0001f9ea" * 4000,
        "data": json.dumps({"n": "\u00e9" * 8000}, ensure_ascii=False),
        "priority": "normal",
    }
    body = urlencode(fields).encode()
    assert 90_000 < len(body) < FORM_MAX_BYTES
    assert await _post(server, cookie, b"/dashboard/send", body) == 303
    await settle()
    assert log_errors(server) == []
