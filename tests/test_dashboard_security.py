"""The dashboard's security properties, one test each, against a real server on loopback.

Every test talks HTTP to a real server (real SQLite file in a temp dir) with its own cookie jar,
exactly as a browser would, including the Origin header browsers send with every POST.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from diagnoxix.keys import SERVICE, STORE

from .dashboard_support import ADMIN, ADMIN_PASSWORD, LiveServer, StaffClient, start_server

PAGES = (
    "/dashboard/",
    "/dashboard/send",
    "/dashboard/notifications",
    "/dashboard/users",
    "/dashboard/users/patient-1",
    "/dashboard/keys",
    "/dashboard/audit",
    "/dashboard/test-client",
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = await start_server(tmp_path)
    yield live
    await live.close()


@pytest.fixture
async def staff(server: LiveServer) -> AsyncIterator[StaffClient]:
    client = StaffClient(server)
    resp = await client.login()
    assert resp.status == 303, await resp.text()
    yield client
    await client.close()


@pytest.fixture
async def anonymous(server: LiveServer) -> AsyncIterator[StaffClient]:
    client = StaffClient(server)
    yield client
    await client.close()


async def _audit_actions(server: LiveServer) -> list[str]:
    store = server.app[STORE]
    await store.flush()
    return [e["action"] for e in await store.audit_page(before_id=None, limit=500)]


def _send_form(token: str, **fields: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "target": "user",
        "kind": "custom",
        "user_id": "patient-1",
        "title": "Forged?",
        "message": "m",
        "priority": "normal",
        **fields,
    }


async def test_root_and_every_page_send_strangers_to_the_login_form(
    server: LiveServer, anonymous: StaffClient
) -> None:
    resp = await anonymous.get("/")
    assert (resp.status, resp.headers["Location"]) == (302, "/dashboard/")
    for page in PAGES:
        resp = await anonymous.get(page)
        assert resp.status == 303, page
        assert resp.headers["Location"].startswith("/dashboard/login?next="), page
    login = await anonymous.get("/dashboard/login")
    assert login.status == 200
    assert 'name="password"' in await login.text()
    # The staff live socket refuses a handshake without a signed-in session.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await anonymous.http.ws_connect(server.url + "/dashboard/live", headers={"Origin": server.url})
    assert refused.value.status == 401


async def test_the_address_without_its_slash_leads_in_and_keeps_the_session(staff: StaffClient) -> None:
    # `/dashboard` is outside the cookie's path (`/dashboard/`): a page answered there would start
    # a session whose cookie replaces the signed-in one.
    signed_in = staff.cookie()
    resp = await staff.get("/dashboard")
    assert (resp.status, resp.headers["Location"]) == (302, "/dashboard/")
    assert "Set-Cookie" not in resp.headers
    assert staff.cookie() == signed_in
    assert (await staff.get("/dashboard/")).status == 200


async def test_login_starts_a_new_session_and_logout_revokes_it_on_the_server(
    server: LiveServer, anonymous: StaffClient
) -> None:
    await anonymous.csrf("/dashboard/login")
    before_login = anonymous.cookie()
    assert before_login is not None
    resp = await anonymous.login()
    assert (resp.status, resp.headers["Location"]) == (303, "/dashboard/")
    signed_in = anonymous.cookie()
    assert signed_in is not None
    assert signed_in != before_login
    assert (await anonymous.get("/dashboard/")).status == 200

    # The pre-login cookie never becomes a signed-in one (no session fixation).
    async with aiohttp.ClientSession() as other:
        resp = await other.get(
            server.url + "/dashboard/",
            headers={"Cookie": f"dxn_dashboard={before_login}"},
            allow_redirects=False,
        )
        assert resp.status == 303

    token = await anonymous.csrf("/dashboard/")
    resp = await anonymous.post("/dashboard/logout", {"csrf_token": token})
    assert (resp.status, resp.headers["Location"]) == (303, "/dashboard/login")
    # A copy of the cookie taken before logout still decrypts, but no longer signs anyone in.
    async with aiohttp.ClientSession() as thief:
        resp = await thief.get(
            server.url + "/dashboard/audit",
            headers={"Cookie": f"dxn_dashboard={signed_in}"},
            allow_redirects=False,
        )
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/dashboard/login")
    actions = await _audit_actions(server)
    assert actions[:2] == ["logout", "login"]


async def test_forged_form_posts_change_nothing(server: LiveServer, staff: StaffClient) -> None:
    other = StaffClient(server)
    try:
        assert (await other.login()).status == 303
        others_token = await other.csrf()
        own_token = await staff.csrf()
        assert others_token != own_token
        store = server.app[STORE]
        stored_before = (await store.counts()).stored
        keys_before = len(await store.list_api_keys())
        forgeries = {
            "no token": (_send_form(""), "same"),
            "wrong token": (_send_form("0" * 64), "same"),
            "another session's token": (_send_form(others_token), "same"),
            "right token, another site": (_send_form(own_token), "https://evil.example"),
            "right token, no Origin": (_send_form(own_token), None),
        }
        for name, (form, origin) in forgeries.items():
            resp = await staff.post("/dashboard/send", form, origin=origin)
            assert resp.status == 403, name
            resp = await staff.post(
                "/dashboard/keys", {"csrf_token": form["csrf_token"], "name": "x"}, origin=origin
            )
            assert resp.status == 403, name
        await store.flush()
        assert (await store.counts()).stored == stored_before
        assert len(await store.list_api_keys()) == keys_before
        actions = await _audit_actions(server)
        assert "notification.send" not in actions
        assert "apikey.create" not in actions
        # The same form with its own token from our own page works: the checks are not blanket.
        resp = await staff.post("/dashboard/send", _send_form(own_token))
        assert resp.status == 303
        assert (await store.counts()).stored == stored_before + 1
    finally:
        await other.close()


async def test_failed_logins_lock_that_account_from_that_address_only(
    server: LiveServer, anonymous: StaffClient
) -> None:
    await server.add_staff("bob", "another long password")
    for _ in range(5):
        resp = await anonymous.login(ADMIN, "not the password at all")
        assert resp.status == 401
    # Locked here: even the right password is refused, with a hint when to retry.
    resp = await anonymous.login(ADMIN, ADMIN_PASSWORD)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in await resp.text()
    assert (await anonymous.get("/dashboard/")).status == 303
    # Another account is not affected, nor is the locked account's owner at her own terminal.
    bob = StaffClient(server)
    alice_at_her_desk = StaffClient(server, address="127.0.0.2")
    try:
        assert (await bob.login("bob", "another long password")).status == 303
        assert (await alice_at_her_desk.login(ADMIN, ADMIN_PASSWORD)).status == 303
    finally:
        await bob.close()
        await alice_at_her_desk.close()
    actions = await _audit_actions(server)
    assert actions.count("login.failed") == 5
    assert "login.throttled" in actions


async def test_guessing_across_many_accounts_from_one_address_is_throttled(
    server: LiveServer, anonymous: StaffClient
) -> None:
    for i in range(30):
        assert (await anonymous.login(f"user{i}", "guess")).status == 401
    # The address is spent: any account, even with the right password, waits.
    assert (await anonymous.login(ADMIN, ADMIN_PASSWORD)).status == 429
    elsewhere = StaffClient(server, address="127.0.0.3")
    try:
        assert (await elsewhere.login(ADMIN, ADMIN_PASSWORD)).status == 303
    finally:
        await elsewhere.close()


async def test_a_mistyped_username_is_never_written_down(
    server: LiveServer, anonymous: StaffClient, caplog: pytest.LogCaptureFixture
) -> None:
    typed = "my-secret-password-typed-in-the-wrong-box"
    for _ in range(6):
        resp = await anonymous.login(typed, "whatever it was")
    assert resp.status == 429  # unknown names are throttled too, so 429 tells nothing
    store = server.app[STORE]
    await store.flush()
    entries = await store.audit_page(before_id=None, limit=20)
    assert {e["actor"] for e in entries if e["action"].startswith("login.")} == {"staff:(unknown account)"}
    assert typed not in json.dumps(entries)
    assert typed not in caplog.text
    with sqlite3.connect(server.settings.db_path) as db:
        dump = "\n".join(db.iterdump())
    assert typed not in dump


async def test_script_in_a_notification_is_shown_as_text(server: LiveServer, staff: StaffClient) -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    await server.app[SERVICE].create_and_send_notification("patient-1", "CUSTOM", evil, evil)
    for page in ("/dashboard/notifications", "/dashboard/users/patient-1"):
        html = await (await staff.get(page)).text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html, page
        assert "<script>alert(1)" not in html, page
        assert "<img src=x" not in html, page


async def test_security_headers_and_cookie_attributes(server: LiveServer, anonymous: StaffClient) -> None:
    resp = await anonymous.get("/dashboard/login")
    cookie = resp.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/dashboard/", "Max-Age=28800"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain http on loopback; https requests get Secure
    assert (await anonymous.login()).status == 303
    urls = [*PAGES, "/dashboard/login", "/dashboard/no-such-page"]
    for url in urls:
        resp = await anonymous.get(url)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp, url
        assert "unsafe-inline" not in csp, url
        assert "unsafe-eval" not in csp, url
        assert "frame-ancestors 'none'" in csp, url
        assert resp.headers["X-Content-Type-Options"] == "nosniff", url
        assert resp.headers["X-Frame-Options"] == "DENY", url
        assert resp.headers["Cache-Control"] == "no-store", url
        if resp.status == 200:
            assert "<script>" not in await resp.text(), url  # no inline script anywhere
    static = await anonymous.get("/dashboard/static/live.js")
    assert static.status == 200
    assert static.headers["X-Content-Type-Options"] == "nosniff"


async def test_send_form_errors_sit_next_to_their_fields(server: LiveServer, staff: StaffClient) -> None:
    token = await staff.csrf()
    resp = await staff.post("/dashboard/send", _send_form(token, title="", data="{not json"))
    assert resp.status == 422
    html = await resp.text()
    assert 'id="e-title" data-error-for="title">is required' in html
    assert 'id="e-data" data-error-for="data">must be valid JSON' in html
    assert 'aria-invalid="true"' in html
    resp = await staff.post("/dashboard/send", _send_form(token, target="broadcast", kind="lab_result"))
    assert resp.status == 422
    assert "a broadcast is a custom notification" in await resp.text()
    assert (await server.app[STORE].counts()).stored == 0


async def test_each_kind_goes_through_the_service_and_is_audited(
    server: LiveServer, staff: StaffClient
) -> None:
    token = await staff.csrf()
    forms = [
        _send_form(token, kind="appointment", appointment_id="appt-1", status="cancelled", title=""),
        _send_form(token, kind="lab_result", test_name="CBC", abnormal="on"),
        _send_form(token, kind="ai_analysis", analysis_type="symptom_analysis", analysis_id="an-1"),
        _send_form(token, title="Private title XYZ", data='{"ref": "r-1"}', type="CUSTOM_TYPE"),
        _send_form(token, target="broadcast", title="Maintenance", user_id=""),
    ]
    for form in forms:
        resp = await staff.post("/dashboard/send", form)
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"].startswith("/dashboard/send?sent=")
    store = server.app[STORE]
    notes = await store.list_notifications(user_id=None, type=None, status=None, before_seq=None, limit=10)
    by_type = {n.type: n for n in notes}
    assert by_type["appointment_cancelled"].priority == "high"
    assert by_type["lab_result_ready"].priority == "high"
    assert "ai_analysis_complete" in by_type
    assert by_type["CUSTOM_TYPE"].data == {"ref": "r-1"}
    assert by_type["system"].is_broadcast
    await store.flush()
    entries = await store.audit_page(before_id=None, limit=20)
    sends = [e for e in entries if e["action"] == "notification.send"]
    assert len(sends) == 4
    assert all(e["actor"] == f"staff:{ADMIN}" for e in sends)
    assert {e["target"] for e in sends} == {"patient-1"}
    assert [e["action"] for e in entries].count("notification.broadcast") == 1
    assert "Private title XYZ" not in json.dumps(entries)  # never the body
    # The result page shows the stored id and its state (nobody connected: queued).
    sent_id = by_type["CUSTOM_TYPE"].id
    html = await (await staff.get(f"/dashboard/send?sent={sent_id}")).text()
    assert sent_id in html
    assert 'data-delivery-state="queued"' in html


async def test_live_socket_pushes_figures_and_closes_when_the_session_ends(
    server: LiveServer, staff: StaffClient
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await staff.http.ws_connect(
            server.url + "/dashboard/live", headers={"Origin": "https://evil.example"}
        )
    assert refused.value.status == 403
    live = await staff.http.ws_connect(server.url + "/dashboard/live", headers={"Origin": server.url})
    first = await live.receive_json(timeout=5)
    assert first["type"] == "stats"
    assert first["stats"]["connections"] == 0
    async with aiohttp.ClientSession() as patient_http:
        patient = await patient_http.ws_connect(f"{server.ws_url}?token={server.token('patient-9')}")
        async with asyncio.timeout(5):
            while (await live.receive_json())["stats"]["connections"] != 1:
                pass
        await patient.close()
    token = await staff.csrf("/dashboard/")
    assert (await staff.post("/dashboard/logout", {"csrf_token": token})).status == 303
    async with asyncio.timeout(5):
        while (msg := await live.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert live.close_code == 4001


async def test_admin_disconnects_a_users_connections(server: LiveServer, staff: StaffClient) -> None:
    async with aiohttp.ClientSession() as http:
        sockets = [
            await http.ws_connect(f"{server.ws_url}?token={server.token('patient-5')}") for _ in range(2)
        ]
        bystander = await http.ws_connect(f"{server.ws_url}?token={server.token('patient-6')}")
        html = await (await staff.get("/dashboard/users")).text()
        assert 'data-user="patient-5"' in html
        assert 'data-user="patient-6"' in html
        page = await (await staff.get("/dashboard/users/patient-5")).text()
        assert 'data-user-stat="connections">2<' in page
        token = await staff.csrf("/dashboard/users/patient-5")
        resp = await staff.post("/dashboard/users/patient-5/disconnect", {"csrf_token": token})
        assert resp.status == 303
        for ws in sockets:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
        assert not bystander.closed
        await bystander.close()
    store = server.app[STORE]
    await store.flush()
    (entry,) = [
        e for e in await store.audit_page(before_id=None, limit=10) if e["action"] == "user.disconnect"
    ]
    assert entry["target"] == "patient-5"
    assert entry["details"] == {"connections": 2}


async def _mint(server: LiveServer, user_id: str, http: aiohttp.ClientSession) -> tuple[str, str]:
    """(token, token id), minted over the API as a clinic backend does."""
    headers = {"Authorization": f"Bearer {await server.api_key()}"}
    resp = await http.post(f"{server.url}/v1/tokens", json={"user_id": user_id}, headers=headers)
    body = await resp.json()
    return body["token"], body["token_id"]


async def test_admin_revokes_a_device_with_the_form_token_only(
    server: LiveServer, staff: StaffClient
) -> None:
    async with aiohttp.ClientSession() as http:
        token, token_id = await _mint(server, "patient-7", http)
        kept, kept_id = await _mint(server, "patient-7", http)
        revoked_ws = await http.ws_connect(f"{server.ws_url}?token={token}")
        kept_ws = await http.ws_connect(f"{server.ws_url}?token={kept}")
        page = await (await staff.get("/dashboard/users/patient-7")).text()
        assert f'data-device="{token_id}"' in page
        assert f'data-device="{kept_id}"' in page
        path = f"/dashboard/users/patient-7/devices/{token_id}/revoke"
        # A forged post (no form token, or another site's) revokes nothing.
        assert (await staff.post(path, {"csrf_token": "0" * 64})).status == 403
        form = await staff.csrf("/dashboard/users/patient-7")
        assert (await staff.post(path, {"csrf_token": form}, origin="https://evil.example")).status == 403
        assert not revoked_ws.closed
        resp = await staff.post(path, {"csrf_token": form})
        assert resp.status == 303
        msg = await revoked_ws.receive(timeout=5)
        # The server's close frame (the client's own record may say 1006 if the server hangs up
        # before the client's echo is written).
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4003)
        assert not kept_ws.closed
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{server.ws_url}?token={token}")
        assert refused.value.status == 401
        page = await (await staff.get(resp.headers["Location"])).text()
        assert "Revoked 1 device(s)" in page
        # Revoke all: the remaining device too.
        resp = await staff.post("/dashboard/users/patient-7/devices/revoke", {"csrf_token": form})
        assert resp.status == 303
        msg = await kept_ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4003)
    store = server.app[STORE]
    await store.flush()
    entries = await store.audit_page(before_id=None, limit=20)
    (one,) = [e for e in entries if e["action"] == "device.revoke"]
    (every,) = [e for e in entries if e["action"] == "device.revoke_all"]
    assert one["actor"] == every["actor"] == f"staff:{ADMIN}"
    assert one["details"]["token_ids"] == [token_id]
    assert every["details"]["token_ids"] == [kept_id]


async def test_staff_role_may_send_but_not_manage_keys_or_disconnect(server: LiveServer) -> None:
    await server.add_staff("nurse", "a long enough password", role="staff")
    nurse = StaffClient(server)
    try:
        assert (await nurse.login("nurse", "a long enough password")).status == 303
        assert (await nurse.get("/dashboard/send")).status == 200
        assert (await nurse.get("/dashboard/keys")).status == 403
        token = await nurse.csrf()
        assert (await nurse.post("/dashboard/keys", {"csrf_token": token, "name": "x"})).status == 403
        resp = await nurse.post("/dashboard/users/patient-1/disconnect", {"csrf_token": token})
        assert resp.status == 403
        resp = await nurse.post("/dashboard/users/patient-1/devices/revoke", {"csrf_token": token})
        assert resp.status == 403
    finally:
        await nurse.close()
    assert await server.app[STORE].list_api_keys() == []


async def test_notification_list_filters_and_pages(server: LiveServer, staff: StaffClient) -> None:
    service = server.app[SERVICE]
    for i in range(55):
        await service.create_and_send_notification("patient-a", "bulk", f"Bulk {i}", "")
    await service.create_and_send_notification("patient-b", "other", "Just one", "")
    html = await (await staff.get("/dashboard/notifications")).text()
    assert html.count("data-notification=") == 50
    assert "Just one" in html
    assert 'rel="next" href="/dashboard/notifications?before=7"' in html
    older = await (await staff.get("/dashboard/notifications?before=7")).text()
    assert older.count("data-notification=") == 6
    only_b = await (await staff.get("/dashboard/notifications?user=patient-b")).text()
    assert only_b.count("data-notification=") == 1
    by_type = await (await staff.get("/dashboard/notifications?type=bulk&status=queued")).text()
    assert by_type.count("data-notification=") == 50
    assert "Just one" not in by_type
    assert (await (await staff.get("/dashboard/notifications?status=read")).text()).count(
        "data-notification="
    ) == 0


async def test_first_start_without_staff_says_how_to_create_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = await start_server(tmp_path)  # adds its staff account only after starting
    try:
        hint = next(line for line in capsys.readouterr().out.splitlines() if "admin create" in line)
        # The interpreter that runs the server, so the hint works outside an activated virtualenv.
        python = hint.split()[0]
        assert Path(python).resolve() == Path(sys.executable).resolve()
        assert hint.split()[2:4] == ["admin", "create"]
        assert Path(hint.split()[1]).resolve() == (Path(__file__).parent.parent / "run.py").resolve()
    finally:
        await live.close()
    live = await start_server(tmp_path, with_admin=False)  # an account exists now: no hint
    try:
        assert "admin create" not in capsys.readouterr().out
    finally:
        await live.close()
