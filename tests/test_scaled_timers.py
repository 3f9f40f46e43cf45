"""Durable jobs on a store shared by two servers: a job whose server went away before it came due
is run by the other one, which no `wake()` told of it, within the recheck bound."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from diagnoxix.config import Settings
from diagnoxix.delivery.timers import SHARED_RECHECK_SECONDS
from diagnoxix.keys import API_KEYS, TOKENS
from diagnoxix.models import format_timestamp

from .pg_server import PgCluster
from .redis_server import RedisServer
from .servers import start_app

SECRET = "scaled-timers-secret-" + "y" * 40


async def test_a_job_left_by_a_server_that_stopped_is_run_by_the_other(
    pg_cluster: PgCluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    dsn = pg_cluster.dsn(pg_cluster.create_database())
    settings = Settings(
        db_path=tmp_path / "unused.sqlite3",
        store_url=dsn,
        broker_url=redis_server.url,
        secret_key=SECRET,
        log_json=False,
    )
    a = await start_app(settings)
    b = await start_app(settings)
    try:
        _, key = await a.app[API_KEYS].create("scheduler")
        token = b.app[TOKENS].mint("patient-3").token
        async with _session() as http:
            url_b, url_a = f"http://127.0.0.1:{b.port}", f"http://127.0.0.1:{a.port}"
            ws = await http.ws_connect(
                f"{url_b}/v1/ws/notifications?token={token}&since=0", protocols=["diagnoxix.v1"]
            )
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
            due = format_timestamp(datetime.now(UTC) + timedelta(seconds=1))
            body = {"user_id": "patient-3", "title": "Reminder", "message": "9:00", "deliver_at": due}
            auth = {"Authorization": f"Bearer {key}"}
            async with http.post(f"{url_a}/v1/notifications", json=body, headers=auth) as resp:
                assert resp.status == 202, await resp.text()
            # A stops before the job is due: only B can run it, and nothing in B was woken for it.
            await a.close()
            stopped = time.monotonic()
            async with asyncio.timeout(SHARED_RECHECK_SECONDS + 10):
                while (await ws.receive_json()).get("title") != "Reminder":
                    pass
            assert time.monotonic() - stopped <= SHARED_RECHECK_SECONDS + 3
            await ws.close()
    finally:
        await a.close()
        await b.close()


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
