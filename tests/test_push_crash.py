"""The push outbox across kill -9: every push pending when the server died goes out once after
it restarts, and none that the push service had accepted (201) goes out again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from .processes import Launcher, child_env, create_api_key
from .push_service import PushService


async def _until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_pending_pushes_go_out_exactly_once_after_kill_9(launcher: Launcher, tmp_path: Path) -> None:
    pushes = await PushService.start()
    db = tmp_path / "push.sqlite3"
    env = child_env(DIAGNOXIX_PUSH_HOSTS="127.0.0.1", DIAGNOXIX_PUSH_ALLOW_LOOPBACK="1")
    try:
        _, key = await create_api_key(db)
        auth = {"Authorization": f"Bearer {key}"}
        server = await launcher.start(db, env=env)
        browser = pushes.browser()
        async with aiohttp.ClientSession(server.url, headers=auth) as http:
            pushes.vapid_key = (await (await http.get("/v1/push/public-key")).json())["public_key"]
            resp = await http.post("/v1/users/ana/push-subscriptions", json=browser.subscription())
            assert resp.status == 201, await resp.text()

            async def send(title: str) -> str:
                resp = await http.post("/v1/notifications", json={"user_id": "ana", "title": title})
                assert resp.status == 201, await resp.text()
                return str((await resp.json())["notification"]["id"])

            accepted_before = await send("accepted before the crash")
            await _until(lambda: len(pushes.accepted()) == 1)
            # The next three are answered 503 (retry in 2 s): pending when the server is killed.
            browser.script = [(503, "2")] * 3
            pending = [await send(f"pending {n}") for n in range(3)]
            await _until(lambda: len(pushes.received) == 4)
        await asyncio.sleep(0.3)  # their answers recorded (else each goes when its lease ends)
        assert await server.crash() == -signal.SIGKILL

        restarted = await launcher.start(db, env=env)
        # A push whose answer was not recorded yet goes again when its lease ends (timeout + 20 s).
        await _until(lambda: len(pushes.accepted()) == 4, timeout=40.0)
        await asyncio.sleep(2.5)  # anything sent twice would have come by now
        accepted = [r.payload["id"] for r in pushes.accepted()]
        assert sorted(accepted) == sorted([accepted_before, *pending])
        assert pushes.refused == []
        assert await restarted.crash() == -signal.SIGKILL
        # The endpoint (whose path names the browser) and its keys are secrets: never logged.
        keys = browser.subscription()["keys"]
        for run in (server, restarted):
            log = run.stderr() + run.stdout()
            assert "push.sent" in log or "push.retry" in log
            for secret in (browser.id, keys["p256dh"], keys["auth"]):
                assert secret not in log
    finally:
        await pushes.close()
