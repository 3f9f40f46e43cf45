"""`/readyz` says whether a send would be stored now; `/healthz` stays liveness.

The disk is filled for real: the server process gets a file-size limit (RLIMIT_FSIZE, set from
outside with prlimit), so SQLite's next write past it fails as on a full volume. Every send then
gets a clean 503, `/readyz` says not ready while `/healthz` says ok, and once there is room again
the server is ready without a restart and has lost nothing it had acknowledged.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diagnoxix.keys import HUB, STORE

from .conftest import Service
from .processes import Launcher, create_api_key, last_line, run_cli

MESSAGE = "x" * 900  # a lab report's worth of text: the WAL grows fast
MAX_SENDS = 3000


def _file_sizes(db: Path) -> int:
    return max((p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file()), default=0)


async def _status(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
async def test_a_full_disk_makes_the_server_unready_not_dead_and_loses_nothing(
    launcher: Launcher, tmp_path: Path
) -> None:
    db = tmp_path / "notify.sqlite3"
    _, key = await create_api_key(db)
    server = await launcher.start(db)
    auth = {"Authorization": f"Bearer {key}"}
    stored: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        assert await _status(session, f"{server.url}/readyz") == (
            200,
            {"status": "ready", "broker": "in-process"},
        )
        # From now on no file of the database may grow past 256 KiB beyond its largest today.
        limit = _file_sizes(db) + 256 * 1024
        # And nothing can be freed: a reader holding its snapshot (as a backup in progress does)
        # keeps the checkpointer from emptying the WAL into the database, so once the WAL reaches
        # the limit it stays full (else the "full" disk could take writes again a moment later).
        pin = sqlite3.connect(db, isolation_level=None)
        pin.execute("BEGIN")
        pin.execute("SELECT count(*) FROM notifications").fetchone()
        # The soft limit only: raising a hard one again takes a privilege the test may not have.
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        refusal: dict[str, Any] | None = None
        for i in range(MAX_SENDS):
            body = {"user_id": "patient-1", "title": f"Result {i}", "message": MESSAGE}
            async with session.post(f"{server.url}/v1/notifications", json=body, headers=auth) as resp:
                if resp.status == 201:
                    stored.append((await resp.json())["notification"]["id"])
                    continue
                assert resp.status == 503, await resp.text()
                refusal = await resp.json()
                break
        assert refusal is not None, f"the disk never filled after {MAX_SENDS} sends"
        assert refusal["error"]["code"] == "store_unavailable"
        assert stored, "the limit left no room for a single send"

        # Full: not ready, but alive; and a second send is refused just as cleanly.
        status, answer = await _status(session, f"{server.url}/readyz")
        assert status == 503, answer
        assert answer["error"]["code"] == "not_ready"
        assert "could not commit a write" in answer["error"]["message"]
        assert await _status(session, f"{server.url}/healthz") == (200, {"status": "ok"})
        body = {"user_id": "patient-1", "title": "After", "message": MESSAGE}
        async with session.post(f"{server.url}/v1/notifications", json=body, headers=auth) as resp:
            assert resp.status == 503

        # Room again: ready without a restart, and sends are stored.
        pin.rollback()
        pin.close()
        unlimited = resource.RLIM_INFINITY
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
        deadline = time.monotonic() + 10
        while (await _status(session, f"{server.url}/readyz"))[0] != 200:
            assert time.monotonic() < deadline, "never ready again"
            await asyncio.sleep(0.2)
        body = {"user_id": "patient-1", "title": "Recovered", "message": "ok"}
        async with session.post(f"{server.url}/v1/notifications", json=body, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            stored.append((await resp.json())["notification"]["id"])

    assert await server.terminate() == 0
    assert "Traceback" not in server.stderr()

    # Everything acknowledged with a 201 is there after a restart.
    again = await launcher.start(db)
    done = await run_cli("token", "patient-1", "--db", str(db))
    assert done.returncode == 0, done.stderr
    token = last_line(done.stdout)
    found: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        headers = {"Authorization": f"Bearer {token}"}
        cursor: int | None = None
        while True:
            query = "?limit=100" + (f"&before={cursor}" if cursor is not None else "")
            url = f"{again.url}/v1/users/patient-1/notifications{query}"
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                page = await resp.json()
            found.extend(n["id"] for n in page["notifications"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert set(stored) <= set(found)
    assert len(found) == len(stored)


async def test_a_server_that_is_shutting_down_is_not_ready(service: Service) -> None:
    resp = await service.client.get("/readyz")
    assert resp.status == 200
    # What shutdown does first (on_shutdown): every socket gets 1001 and no new one is taken.
    await service.app[HUB].close_all()
    resp = await service.client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"] == {
        "code": "not_ready",
        "message": "the server is shutting down",
        "details": {"broker": "in-process"},
    }
    assert resp.headers["Retry-After"] == "5"
    assert (await service.client.get("/healthz")).status == 200  # alive until it exits


async def _quiet_commits(service: Service) -> int:
    """The store's commit count once start-up's own writes have settled."""
    store = service.app[STORE]
    while True:
        before: int = (await store.counts()).commits
        await asyncio.sleep(0.2)
        if (await store.counts()).commits == before:
            return before


async def test_concurrent_probes_share_one_write(service: Service) -> None:
    before = await _quiet_commits(service)
    answers = await asyncio.gather(*(service.client.get("/readyz") for _ in range(50)))
    assert {r.status for r in answers} == {200}
    # One probe write, not fifty.
    assert (await service.app[STORE].counts()).commits - before == 1


@pytest.mark.sqlite_file
async def test_another_program_holding_the_write_lock_is_a_503_in_bounded_time(service: Service) -> None:
    """An operator's tool keeps a write transaction open on the file: a send waits out the busy
    timeout and gets a 503 (never a hang, never a 500); the server is unready meanwhile and stores
    again as soon as the lock is let go."""
    before = await service.send("patient-1", "before")
    other = sqlite3.connect(service.settings.db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        body = {"user_id": "patient-1", "title": "while locked", "message": "m"}
        resp = await asyncio.wait_for(
            service.client.post("/v1/notifications", json=body, headers=service.auth()), 30
        )
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"]["code"] == "store_unavailable"
        # Bounded by SQLite's busy timeout (5 s per attempt), not by the other program.
        assert time.monotonic() - started < 15
        assert (await service.client.get("/readyz")).status == 503
    finally:
        other.execute("ROLLBACK")
        other.close()
    after = await service.send("patient-1", "after")
    assert after["seq"] > before["seq"]
