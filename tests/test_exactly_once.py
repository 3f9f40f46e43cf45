"""Property: whatever mix of sends, dropped connections and server restarts happens, every
subscriber ends up with every one of its notifications exactly once, in seq order.

Hypothesis drives a stateful model against a real server (restarted on the same SQLite file and
port) and real `Subscriber` clients from `diagnoxix_client`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from diagnoxix.config import Settings
from diagnoxix.keys import API_KEYS
from diagnoxix_client import NotifyClient, NotifyError, Subscriber

from .servers import start_app

USERS = ("ana", "ben", "cat")
SECRET = "property-test-secret-" + "z" * 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ExactlyOnce(RuleBasedStateMachine):
    """The model: what was acknowledged as sent to each user, and what each subscriber saw."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="dxn-prop-"))
        self.port = _free_port()
        self.settings = Settings(
            port=self.port, db_path=self.tmp / "p.sqlite3", secret_key=SECRET, log_json=False
        )
        self.server: TestServer | None = None
        self.api_key = ""
        self.sent: dict[str, list[int]] = {u: [] for u in USERS}
        self.seen: dict[str, list[dict[str, Any]]] = {u: [] for u in USERS}
        self.subscribers: dict[str, Subscriber] = {}
        self.consumers: list[asyncio.Task[None]] = []
        self.client: NotifyClient | None = None

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start_server(self) -> None:
        # A short grace: a subscriber reconnecting just as the server stops makes aiohttp wait the
        # whole grace for a request it has already ignored (see `app.SHUTDOWN_GRACE_SECONDS`).
        self.server = await start_app(self.settings, port=self.port, shutdown_timeout=1.0)

    async def _stop_server(self) -> None:
        assert self.server is not None
        await self.server.close()
        self.server = None

    @initialize()
    def start(self) -> None:
        async def go() -> None:
            await self._start_server()
            assert self.server is not None
            _, self.api_key = await self.server.app[API_KEYS].create("property")
            self.client = NotifyClient(f"http://127.0.0.1:{self.port}", self.api_key)
            await self.client.__aenter__()
            for user in USERS:
                sub = Subscriber(
                    f"http://127.0.0.1:{self.port}", self._token_for(user), since=0, max_backoff=0.2
                )
                sub.start()
                self.subscribers[user] = sub
                self.consumers.append(asyncio.create_task(self._consume(user, sub)))

        self.run(go())

    def _token_for(self, user: str) -> Any:
        async def provide() -> str:
            # Minted with the shared secret, so it stays valid across server restarts.
            from diagnoxix.auth import TokenIssuer

            return TokenIssuer(SECRET, default_ttl=600, max_ttl=600).mint(user).token

        return provide

    async def _consume(self, user: str, sub: Subscriber) -> None:
        async for note in sub:
            self.seen[user].append(note)

    @precondition(lambda self: self.server is not None)
    @rule(user=st.sampled_from(USERS), count=st.integers(1, 4))
    def send(self, user: str, count: int) -> None:
        async def go() -> None:
            assert self.client is not None
            items = [{"user_id": user, "title": f"t{i}"} for i in range(count)]
            stored = await self.client.send_batch(items)
            self.sent[user] += [n["seq"] for n in stored]

        self.run(go())

    @rule(user=st.sampled_from(USERS))
    def drop_connection(self, user: str) -> None:
        async def go() -> None:
            ws = self.subscribers[user]._ws
            if ws is not None:
                await ws.close()

        self.run(go())

    @precondition(lambda self: self.server is not None)
    @rule()
    def restart_server(self) -> None:
        async def go() -> None:
            await self._stop_server()
            await asyncio.sleep(0.05)
            await self._start_server()

        self.run(go())

    @precondition(lambda self: self.server is not None)
    @rule()
    def stop_server(self) -> None:
        self.run(self._stop_server())

    @precondition(lambda self: self.server is None)
    @rule()
    def start_server(self) -> None:
        self.run(self._start_server())

    @invariant()
    def never_a_duplicate_or_out_of_order(self) -> None:
        for user, notes in self.seen.items():
            seqs = [n["seq"] for n in notes]
            assert seqs == sorted(set(seqs)), (user, seqs)
            assert {n["user_id"] for n in notes} <= {user}

    def teardown(self) -> None:
        async def settle() -> None:
            if self.server is None:
                await self._start_server()
            try:
                async with asyncio.timeout(5):
                    while any(len(self.seen[u]) < len(self.sent[u]) for u in USERS):
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)  # a duplicate would arrive now
            finally:
                for task in self.consumers:
                    task.cancel()
                await asyncio.gather(*self.consumers, return_exceptions=True)
                for sub in self.subscribers.values():
                    await sub.close()
                if self.client is not None:
                    await self.client.close()
                if self.server is not None:
                    await self._stop_server()

        try:
            self.run(settle())
            for user in USERS:
                assert [n["seq"] for n in self.seen[user]] == self.sent[user], user
                for sub in self.subscribers.values():
                    assert not isinstance(sub.error, NotifyError), sub.error
        finally:
            leftovers = asyncio.all_tasks(self.loop)
            for task in leftovers:
                task.cancel()

            async def drain() -> None:
                await asyncio.gather(*leftovers, return_exceptions=True)

            self.run(drain())
            self.run(self.loop.shutdown_asyncgens())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


ExactlyOnce.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestExactlyOnce = ExactlyOnce.TestCase
