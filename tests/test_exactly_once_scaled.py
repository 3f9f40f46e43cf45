"""Property, scaled out: two server processes' worth (two apps) on one PostgreSQL database and one
Redis. Whatever mix of sends through either, dropped connections and restarts of either happens,
every subscriber ends up with every one of its notifications exactly once, in seq order, though
it is connected to one server and its notifications were sent through the other.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from diagnoxix.auth import TokenIssuer
from diagnoxix.config import Settings
from diagnoxix.keys import API_KEYS
from diagnoxix_client import NotifyClient, NotifyError, Subscriber

from .pg_server import PgCluster
from .processes import free_port
from .redis_server import RedisServer, require_redis_server
from .servers import start_app

# Each user's subscriber is connected to one server: ana and cat to A, ben to B.
HOMES = {"ana": 0, "ben": 1, "cat": 0}
SECRET = "scaled-property-secret-" + "z" * 32


class ExactlyOnceScaled(RuleBasedStateMachine):
    cluster: ClassVar[PgCluster]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="dxn-scaled-"))
        self.redis = RedisServer(self.tmp / "redis")
        self.ports = [free_port(), free_port()]
        self.servers: list[TestServer | None] = [None, None]
        self.settings: list[Settings] = []
        self.sent: dict[str, list[int]] = {u: [] for u in HOMES}
        self.seen: dict[str, list[dict[str, Any]]] = {u: [] for u in HOMES}
        self.subscribers: dict[str, Subscriber] = {}
        self.consumers: list[asyncio.Task[None]] = []
        self.clients: list[NotifyClient] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start(self, which: int) -> None:
        self.servers[which] = await start_app(
            self.settings[which], port=self.ports[which], shutdown_timeout=1.0
        )

    async def _stop(self, which: int) -> None:
        server = self.servers[which]
        if server is not None:
            self.servers[which] = None
            await server.close()

    @initialize()
    def start(self) -> None:
        async def go() -> None:
            await self.redis.start()
            dsn = self.cluster.dsn(self.cluster.create_database())
            for which in (0, 1):
                self.settings.append(
                    Settings(
                        port=self.ports[which],
                        db_path=self.tmp / f"unused-{which}.sqlite3",
                        store_url=dsn,
                        broker_url=self.redis.url,
                        secret_key=SECRET,
                        log_json=False,
                    )
                )
                await self._start(which)
            first = self.servers[0]
            assert first is not None
            _, key = await first.app[API_KEYS].create("property")
            for which in (0, 1):
                client = NotifyClient(f"http://127.0.0.1:{self.ports[which]}", key)
                await client.__aenter__()
                self.clients.append(client)
            for user, home in HOMES.items():
                sub = Subscriber(
                    f"http://127.0.0.1:{self.ports[home]}", self._token_for(user), since=0, max_backoff=0.2
                )
                sub.start()
                self.subscribers[user] = sub
                self.consumers.append(asyncio.create_task(self._consume(user, sub)))

        self.run(go())

    def _token_for(self, user: str) -> Any:
        async def provide() -> str:
            return TokenIssuer(SECRET, default_ttl=600, max_ttl=600).mint(user).token

        return provide

    async def _consume(self, user: str, sub: Subscriber) -> None:
        async for note in sub:
            self.seen[user].append(note)

    @rule(user=st.sampled_from(sorted(HOMES)), count=st.integers(1, 4), via=st.integers(0, 1))
    def send(self, user: str, count: int, via: int) -> None:
        """Through the server the user is not connected to when it is up (else the other)."""
        if self.servers[via] is None:
            via = 1 - via
        if self.servers[via] is None:
            return

        async def go() -> None:
            items = [{"user_id": user, "title": f"t{i}"} for i in range(count)]
            stored = await self.clients[via].send_batch(items)
            self.sent[user] += [n["seq"] for n in stored]

        self.run(go())

    @rule(user=st.sampled_from(sorted(HOMES)))
    def drop_connection(self, user: str) -> None:
        async def go() -> None:
            ws = self.subscribers[user]._ws
            if ws is not None:
                await ws.close()

        self.run(go())

    @rule(which=st.integers(0, 1))
    def restart_server(self, which: int) -> None:
        async def go() -> None:
            await self._stop(which)
            await asyncio.sleep(0.05)
            await self._start(which)

        self.run(go())

    @rule(which=st.integers(0, 1))
    def stop_or_start_server(self, which: int) -> None:
        self.run(self._stop(which) if self.servers[which] is not None else self._start(which))

    @invariant()
    def never_a_duplicate_or_out_of_order(self) -> None:
        for user, notes in self.seen.items():
            seqs = [n["seq"] for n in notes]
            assert seqs == sorted(set(seqs)), (user, seqs)
            assert {n["user_id"] for n in notes} <= {user}

    def teardown(self) -> None:
        async def settle() -> None:
            for which in (0, 1):
                if self.servers[which] is None:
                    await self._start(which)
            try:
                async with asyncio.timeout(10):
                    while any(len(self.seen[u]) < len(self.sent[u]) for u in HOMES):
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.2)  # a duplicate would arrive now
            finally:
                for task in self.consumers:
                    task.cancel()
                await asyncio.gather(*self.consumers, return_exceptions=True)
                for sub in self.subscribers.values():
                    await sub.close()
                for client in self.clients:
                    await client.close()
                for which in (0, 1):
                    await self._stop(which)
                await self.redis.kill()

        try:
            self.run(settle())
            for user in HOMES:
                assert [n["seq"] for n in self.seen[user]] == self.sent[user], user
                for sub in self.subscribers.values():
                    assert not isinstance(sub.error, NotifyError), sub.error
        finally:
            self.redis.stop_now()
            leftovers = asyncio.all_tasks(self.loop)
            for task in leftovers:
                task.cancel()

            async def drain() -> None:
                await asyncio.gather(*leftovers, return_exceptions=True)

            self.run(drain())
            self.run(self.loop.shutdown_asyncgens())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def test_exactly_once_across_two_servers_on_postgresql_and_redis(pg_cluster: PgCluster) -> None:
    require_redis_server()
    ExactlyOnceScaled.cluster = pg_cluster
    run_state_machine_as_test(
        ExactlyOnceScaled,
        settings=settings(
            max_examples=8,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
