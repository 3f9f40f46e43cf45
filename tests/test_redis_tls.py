"""Redis over TLS (`rediss://`): processes reach each other through a TLS-only redis-server, and a
certificate the process cannot verify is refused: it serves without Redis rather than talk to an
unverified server. Real redis-server (Debian's is built with TLS), real certificates (openssl)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from diagnoxix.keys import STORE

from .cluster_support import MakeService, broker_of, broker_up, eventually, pair, welcome
from .redis_server import RedisServer, TlsFiles, require_redis_server
from .tls_certs import make_certificate


@pytest.fixture
async def tls_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    require_redis_server()
    cert, key = make_certificate(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis", tls=TlsFiles(cert, key, ca=cert))
    await server.start()
    try:
        yield server
    finally:
        server.stop_now()


async def test_two_processes_share_notifications_through_redis_over_tls(
    make_service: MakeService, tls_redis: RedisServer
) -> None:
    assert tls_redis.url.startswith("rediss://")
    a, b = await pair(make_service, tls_redis)
    await eventually(lambda: broker_up(a, b), what="both processes on Redis over TLS")
    ws = await a.connect("patient-1", v1=True, since=0)
    await welcome(ws)
    sent = [await b.send("patient-1", f"result {i}") for i in range(3)]
    got = [await ws.receive_json(timeout=5) for _ in sent]
    assert [(f["id"], f["seq"]) for f in got] == [(n["id"], n["seq"]) for n in sent]
    await ws.close()


async def test_a_certificate_the_process_cannot_verify_is_refused(
    make_service: MakeService, tls_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The same server without its CA in the URL: the system's trust store does not know it, so
    the process never talks to it. It serves without Redis, as in any Redis outage: sends are
    stored (and reach patients once a broker is there), /readyz says the broker is down."""
    unverified = tls_redis.url.split("?", 1)[0]
    service = await make_service(broker_url=unverified)

    async def down() -> bool:
        resp = await service.client.get("/readyz")
        return resp.status == 200 and (await resp.json())["broker"] == "down"

    await eventually(down, what="/readyz reports the broker down")
    note = await service.send("patient-2", "Lab result ready")  # stored: 201
    (stored,) = await service.app[STORE].get_notifications([note["id"]])
    assert stored.user_id == "patient-2"
    assert broker_of(service).state == "down"
    # The refusal is logged without a traceback at error level.
    assert not [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
