"""Factory fixtures: a real app on a loopback port, a real SQLite file in a temp dir."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, async_playwright

from diagnoxix.clock import Clock
from diagnoxix.config import Settings
from diagnoxix.keys import API_KEYS, TOKENS

from .dashboard_support import CHROMIUM, launch_chromium
from .pg_server import pg_cluster, pg_dsn  # noqa: F401 - fixtures
from .processes import Launcher
from .push_service import PushService
from .redis_server import RedisServer, require_redis_server
from .servers import start_app
from .store_backends import store, store_clock  # noqa: F401 - fixtures

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@dataclass
class Service:
    """A running server plus what a test needs to talk to it as a backend or a patient."""

    client: TestClient[Any, Any]
    settings: Settings
    api_key: str

    @property
    def app(self) -> Any:
        return self.client.app

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def token(self, user_id: str, ttl: int | None = None) -> str:
        return str(self.app[TOKENS].mint(user_id, ttl).token)

    async def connect(self, user_id: str, *, v1: bool = False, since: int | None = None, **kw: Any) -> Any:
        """Open a WebSocket as `user_id` with a real connection token."""
        query = f"?token={self.token(user_id)}"
        if since is not None:
            query += f"&since={since}"
        protocols = ("diagnoxix.v1",) if v1 else ()
        return await self.client.ws_connect(f"/v1/ws/notifications{query}", protocols=protocols, **kw)

    async def send(self, user_id: str, title: str = "Hello", **fields: Any) -> dict[str, Any]:
        body = {"user_id": user_id, "title": title, "message": fields.pop("message", "msg"), **fields}
        resp = await self.client.post("/v1/notifications", json=body, headers=self.auth())
        assert resp.status == 201, await resp.text()
        return (await resp.json())["notification"]  # type: ignore[no-any-return]


# `DIAGNOXIX_TEST_STORE=postgresql`: the app tests' servers use a fresh PostgreSQL database each
# (a throwaway cluster, `pg_server`) instead of an SQLite file: `make test-postgresql`.
TEST_STORE = os.environ.get("DIAGNOXIX_TEST_STORE", "sqlite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On PostgreSQL, the tests that look inside the SQLite file have nothing to look at."""
    if TEST_STORE != "postgresql":
        return
    skip = pytest.mark.skip(reason="looks inside the SQLite file (DIAGNOXIX_TEST_STORE=postgresql)")
    for item in items:
        if item.get_closest_marker("sqlite_file") is not None:
            item.add_marker(skip)


@pytest.fixture
def make_settings(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    made = 0

    def build(**overrides: Any) -> Settings:
        nonlocal made
        made += 1
        base = Settings(
            db_path=tmp_path / f"notify-{made}.sqlite3",
            secret_key="test-secret-" + "x" * 40,
            log_json=False,
        )
        if TEST_STORE == "postgresql":
            cluster = request.getfixturevalue("pg_cluster")
            base = base.with_overrides(store_url=cluster.dsn(cluster.create_database()))
        return base.with_overrides(**overrides)

    return build


@pytest.fixture
def make_service(
    aiohttp_client: AiohttpClient, make_settings: Callable[..., Settings]
) -> Callable[..., Awaitable[Service]]:
    async def build(*, clock: Clock | None = None, **overrides: Any) -> Service:
        settings = make_settings(**overrides)
        client = await aiohttp_client(await start_app(settings, clock=clock))
        _, key = await client.app[API_KEYS].create("test-service")
        return Service(client, settings, key)

    return build


@pytest.fixture
async def service(make_service: Callable[..., Awaitable[Service]]) -> Service:
    return await make_service()


@pytest.fixture
async def dev_service(make_service: Callable[..., Awaitable[Service]]) -> Service:
    return await make_service(dev=True)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Starts `run.py` servers for one test; kills those still running at teardown."""
    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.cleanup()


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A throwaway redis-server on a free loopback port, stopped (by PID) at teardown."""
    require_redis_server()
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        server.stop_now()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium, one per test (skipped where it is not installed)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def pushes() -> AsyncIterator[PushService]:
    """A push service on a loopback port (`push_service`), closed at teardown."""
    service = await PushService.start()
    try:
        yield service
    finally:
        await service.close()
