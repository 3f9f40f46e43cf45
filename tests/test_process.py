"""The real server as an operator runs it: `python run.py ...` in its own process, on a real port.

These tests start `run.py` as a subprocess on a free loopback port with its own SQLite file, use the
command line exactly as the README tells an operator to, and talk to the server with real HTTP and
WebSocket clients. Every wait is bounded, and each test ends only the processes it started.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .processes import (
    API_KEY_PATTERN,
    EXIT_DEADLINE_SECONDS,
    Launcher,
    Server,
    child_env,
    create_api_key,
    free_port,
    last_line,
    run_cli,
)

FRAME_TIMEOUT_SECONDS = 5.0
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SEED_FIELDS = ("type", "user_id", "title", "message", "data", "timestamp", "id")


# -- helpers ---------------------------------------------------------------------------------


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = FRAME_TIMEOUT_SECONDS) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg!r}"
    return json.loads(msg.data)


async def assert_silent(ws: aiohttp.ClientWebSocketResponse, seconds: float = 0.5) -> None:
    """Nothing more arrives for a while (no duplicate, no stray frame)."""
    try:
        msg = await ws.receive(timeout=seconds)
    except TimeoutError:
        return
    pytest.fail(f"unexpected frame {msg!r}")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def note(user_id: str, title: str, message: str = "Please check the portal.", **extra: Any) -> dict[str, Any]:
    return {"user_id": user_id, "type": "custom", "title": title, "message": message, **extra}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "clinic" / "notify.sqlite3"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def mint_token_http(http: aiohttp.ClientSession, server: Server, key: str, user_id: str) -> str:
    async with http.post(f"{server.url}/v1/tokens", json={"user_id": user_id}, headers=bearer(key)) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["token"])


async def send_one(http: aiohttp.ClientSession, server: Server, key: str, body: dict[str, Any]) -> Any:
    async with http.post(f"{server.url}/v1/notifications", json=body, headers=bearer(key)) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


# -- 1. API keys from the command line -------------------------------------------------------


async def test_apikey_cli_create_list_use_and_revoke_while_the_server_runs(
    launcher: Launcher, db_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await launcher.start(db_path)

    # The operator creates a key for the billing service while the server is running.
    created = await run_cli("apikey", "create", "billing-service", "--db", str(db_path))
    assert created.returncode == 0, created.stderr
    key = last_line(created.stdout)
    match = API_KEY_PATTERN.fullmatch(key)
    assert match, f"the last line must be the key alone, got {key!r}"
    key_id, secret = match.groups()
    assert key_id in created.stdout.splitlines()[0]

    listed = await run_cli("apikey", "list", "--db", str(db_path))
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout
    assert "billing-service" in listed.stdout
    assert secret not in listed.stdout
    assert secret not in listed.stderr

    # The billing service uses it at once: the server reads keys from the shared database.
    url = f"{server.url}/v1/notifications"
    body = note("patient-1", "Invoice available")
    async with http.post(url, json=body, headers=bearer(key)) as resp:
        assert resp.status == 201, await resp.text()

    revoked = await run_cli("apikey", "revoke", key_id, "--db", str(db_path))
    assert revoked.returncode == 0, revoked.stderr

    # Revocation takes effect on the running server, with no restart.
    async with http.post(url, json=body, headers=bearer(key)) as resp:
        assert resp.status == 401, await resp.text()
        assert (await resp.json())["error"]["code"] == "invalid_api_key"

    listed = await run_cli("apikey", "list", "--db", str(db_path))
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if key_id in line]
    assert "revoked" in row

    unknown = await run_cli("apikey", "revoke", "000000000000", "--db", str(db_path))
    assert unknown.returncode != 0
    assert "000000000000" in unknown.stderr
    again = await run_cli("apikey", "revoke", key_id, "--db", str(db_path))
    assert again.returncode != 0


# -- 2. Connection tokens from the command line ----------------------------------------------


async def test_token_cli_rejects_bad_ttl_and_bad_user_id(db_path: Path) -> None:
    short = await run_cli("token", "patient-42", "--ttl", "5", "--db", str(db_path))
    assert short.returncode != 0
    assert "--ttl" in short.stderr
    assert short.stdout.strip() == ""

    spaced = await run_cli("token", "a b", "--db", str(db_path))
    assert spaced.returncode != 0
    assert "USER_ID" in spaced.stderr
    assert spaced.stdout.strip() == ""


async def test_token_cli_connects_and_survives_a_server_restart(
    launcher: Launcher, db_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await launcher.start(db_path)
    _, key = await create_api_key(db_path)

    # The secret was generated by the server's first start; the CLI signs with the same one.
    minted = await run_cli("token", "patient-42", "--ttl", "60", "--db", str(db_path))
    assert minted.returncode == 0, minted.stderr
    token = last_line(minted.stdout)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token), token

    async def connect_and_receive(server: Server, title: str) -> None:
        # ws_connect succeeds only on 101 Switching Protocols.
        async with http.ws_connect(f"{server.ws_url}?token={token}") as ws:
            sent = await send_one(http, server, key, note("patient-42", title))
            frame = await receive_json(ws)
            assert frame["id"] == sent["notification"]["id"]
            assert frame["user_id"] == "patient-42"
            assert frame["title"] == title

    await connect_and_receive(server, "Appointment confirmed")

    assert await server.terminate() == 0
    restarted = await launcher.start(db_path)
    await connect_and_receive(restarted, "Appointment moved")


# -- 3. Durability ---------------------------------------------------------------------------


async def test_acknowledged_notifications_survive_kill_9_and_arrive_once_in_order(
    launcher: Launcher, db_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await launcher.start(db_path)
    _, key = await create_api_key(db_path, "lab-system")
    patient = "patient-durable"

    # The patient is offline; the lab system sends singles around a batch of 20.
    sent: list[dict[str, Any]] = []
    sent.append((await send_one(http, server, key, note(patient, "Result 0")))["notification"])
    batch = {"notifications": [note(patient, f"Result {i}") for i in range(1, 21)]}
    result = await send_one(http, server, key, batch)
    assert result["count"] == 20
    sent.extend(result["notifications"])
    await send_one(http, server, key, note("someone-else", "Not yours"))
    for i in (21, 22):
        sent.append((await send_one(http, server, key, note(patient, f"Result {i}")))["notification"])
    assert [n["seq"] for n in sent] == sorted(n["seq"] for n in sent)

    assert await server.crash() == -signal.SIGKILL

    restarted = await launcher.start(db_path)
    history_url = f"{restarted.url}/v1/users/{patient}/notifications?limit=100"
    async with http.get(history_url, headers=bearer(key)) as resp:
        assert resp.status == 200, await resp.text()
        stored = (await resp.json())["notifications"]
    assert sorted(n["id"] for n in stored) == sorted(n["id"] for n in sent)
    assert all(n["delivered_at"] is None for n in stored)

    token = await mint_token_http(http, restarted, key, patient)
    async with http.ws_connect(f"{restarted.ws_url}?token={token}") as ws:
        frames = [await receive_json(ws) for _ in sent]
        await assert_silent(ws)
    assert [f["id"] for f in frames] == [n["id"] for n in sent]
    assert [f["title"] for f in frames] == [f"Result {i}" for i in range(23)]
    assert all(f["user_id"] == patient for f in frames)

    # Delivery is recorded, so the next connection gets nothing twice.
    deadline = time.monotonic() + 5.0
    while True:
        async with http.get(history_url, headers=bearer(key)) as resp:
            stored = (await resp.json())["notifications"]
        if all(n["delivered_at"] is not None for n in stored):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"delivery was never recorded: {[n['delivered_at'] for n in stored]}")
        await asyncio.sleep(0.05)
    async with http.ws_connect(f"{restarted.ws_url}?token={token}") as ws:
        await assert_silent(ws)


# -- 4. Graceful stop ------------------------------------------------------------------------


async def test_sigterm_closes_every_socket_with_1001_and_exits_0(
    launcher: Launcher, db_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await launcher.start(db_path)
    _, key = await create_api_key(db_path)
    plain_token = await mint_token_http(http, server, key, "patient-a")
    v1_token = await mint_token_http(http, server, key, "nurse-b")

    async with (
        http.ws_connect(f"{server.ws_url}?token={plain_token}") as plain,
        http.ws_connect(f"{server.ws_url}?since=0", protocols=("diagnoxix.v1", f"bearer.{v1_token}")) as v1,
    ):
        assert (await receive_json(v1))["type"] == "welcome"
        # Both are live: each receives a notification before the stop.
        for ws, user in ((plain, "patient-a"), (v1, "nurse-b")):
            sent = await send_one(http, server, key, note(user, "Before the stop"))
            assert (await receive_json(ws))["id"] == sent["notification"]["id"]

        server.proc.send_signal(signal.SIGTERM)
        for ws in (plain, v1):
            msg = await ws.receive(timeout=EXIT_DEADLINE_SECONDS)
            assert msg.type is aiohttp.WSMsgType.CLOSE, msg
            assert ws.close_code == 1001

    assert await server.wait_exit() == 0
    assert "Traceback" not in server.stderr()
    # The log says the server stopped, and why, after the sockets were closed.
    events = [
        (entry.get("event"), entry.get("signal"))
        for line in server.stderr().splitlines()
        if line.startswith("{")
        for entry in [json.loads(line)]
    ]
    assert ("server.stopping", "SIGTERM") in events
    assert ("server.stop", "SIGTERM") in events
    assert events.index(("server.stopping", "SIGTERM")) < events.index(("server.stop", "SIGTERM"))


# -- 5. Flags and environment ----------------------------------------------------------------


@pytest.mark.parametrize("configured_by", ["flags", "env"])
async def test_dev_mode_serves_the_seed_example(
    configured_by: str, launcher: Launcher, db_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    if configured_by == "flags":
        server = await launcher.start(db_path, dev=True, port=port)
    else:
        env = child_env(DIAGNOXIX_PORT=str(port), DIAGNOXIX_DB=str(db_path), DIAGNOXIX_DEV="1")
        server = await launcher.start(db_path, argv=[], env=env, port=port)
    assert db_path.exists(), "the server did not use the configured database file"
    assert f":{port}" in server.stdout()
    assert "dev mode" in server.stdout()

    # The seed's browser example and its curl command, verbatim apart from host and port.
    async with http.ws_connect(f"ws://127.0.0.1:{port}/v1/ws/notifications?user_id=user-123") as ws:
        seed_body = {"user_id": "user-123", "title": "Test Notification", "message": "This is a test message"}
        async with http.post(
            f"http://127.0.0.1:{port}/v1/ws/test-notification",
            data=json.dumps(seed_body),
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 201, await resp.text()
            answer = await resp.json()
        frame = await receive_json(ws)

    assert set(SEED_FIELDS) <= set(frame)
    assert frame["id"] == answer["notification"]["id"]
    assert frame["user_id"] == "user-123"
    assert frame["title"] == "Test Notification"
    assert frame["message"] == "This is a test message"
    assert isinstance(frame["type"], str)
    assert frame["type"]
    assert frame["data"] == {}
    assert RFC3339_UTC.match(frame["timestamp"]), frame["timestamp"]


async def test_without_dev_user_id_alone_is_refused_before_upgrade(
    launcher: Launcher, db_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await launcher.start(db_path)
    assert "dev mode" not in server.stdout()

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with http.ws_connect(f"{server.ws_url}?user_id=user-123"):
            pytest.fail("upgraded without credentials")
    assert refused.value.status == 401

    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with http.get(f"{server.ws_url}?user_id=user-123", headers=upgrade) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "token_required"

    # The seed's open test endpoint is not open either.
    async with http.post(
        f"{server.url}/v1/ws/test-notification",
        json={"user_id": "user-123", "title": "Test Notification", "message": "This is a test message"},
    ) as resp:
        assert resp.status == 401


# -- 6. File permissions and logs ------------------------------------------------------------


async def test_database_is_private_and_logs_hold_no_token_or_content(
    launcher: Launcher, db_path: Path, http: aiohttp.ClientSession
) -> None:
    assert not db_path.exists()
    server = await launcher.start(db_path)
    # The file holds health information and the server's signing secret: owner only. SQLite
    # gives its WAL and shared-memory files the same mode.
    private = [db_path] + [db_path.with_name(db_path.name + s) for s in ("-wal", "-shm")]
    for path in (p for p in private if p.exists()):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path.name} has mode {oct(mode)}"

    _, key = await create_api_key(db_path)
    token = await mint_token_http(http, server, key, "patient-log")
    title = "Potassium 6.8 mmol/L critical"
    message = "Zx9-private-message-text: call the ward"
    async with http.ws_connect(f"{server.ws_url}?token={token}") as ws:
        await send_one(http, server, key, note("patient-log", title, message, data={"k": "v-secret-data"}))
        frame = await receive_json(ws)
        assert frame["title"] == title

    # Stop cleanly so every log line (the socket's access line comes at its close) is written.
    assert await server.terminate() == 0
    log_text = server.stderr()
    assert token not in log_text
    assert token.rsplit(".", 1)[1] not in log_text  # not even the signature part
    assert title not in log_text
    assert message not in log_text
    assert "v-secret-data" not in log_text
    assert key not in log_text

    entries = [json.loads(line) for line in log_text.splitlines() if line.strip()]
    access = [e for e in entries if e.get("event") == "http.request"]
    assert {"path": "/v1/ws/notifications", "status": 101} in [
        {"path": e["path"], "status": e["status"]} for e in access
    ], access
    assert {"path": "/v1/notifications", "status": 201} in [
        {"path": e["path"], "status": e["status"]} for e in access
    ], access
