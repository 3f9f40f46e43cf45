"""The five scenarios of issue 5, each run against our server and, where it means something, the
ceiling (bare aiohttp) and the peer (python-socketio), with the same clients and the same message.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    NOTE_MESSAGE,
    NOTE_TITLE,
    NOTE_TYPE,
    burst_plan,
    cpu_seconds,
    free_port,
    note_data,
    rss_kib,
    user_id,
)
from bench.procs import BenchError, CpuMeter, Server, Workers, python
from bench.report import Row

# Idle sockets need a moment after the last handshake: our server reads each one's backlog (and
# records each device) after the client already sees its socket open. At least this long, then
# until the server is idle (under IDLE_CORES over IDLE_WINDOW), at most SETTLE_MAX_SECONDS: a run
# that starts while the server still works through the connections measures that work.
SETTLE_SECONDS = 1.0
SETTLE_MAX_SECONDS = 15.0
IDLE_CORES = 0.05
IDLE_WINDOW = 0.25
# The storm target is 10 s: waiting half as long again for stragglers is enough to call it missed.
STORM_WAIT_SECONDS = 15.0
# Generous bounds: a scenario that takes longer than this has failed, and the run stops.
BURST_TIMEOUT = 120.0
CONNECT_TIMEOUT = 180.0


@dataclass(frozen=True)
class Sizes:
    memory_counts: tuple[int, ...]
    memory_runs: int
    broadcasts_per_run: int
    burst_users: int
    burst_count: int
    burst_runs: int
    steady_rate: float
    steady_seconds: float
    steady_runs: int
    steady_users: int
    storm_clients: int
    storm_runs: int
    # Also send while the storm is on (tests the replay-to-live switch under concurrent reads).
    racing: bool = True


FULL = Sizes((1000, 5000, 10000), 3, 3, 2000, 20000, 5, 1000.0, 10.0, 3, 1000, 5000, 3)
# Quick: one memory ramp per server (its broadcasts still give 3 samples), short steady runs.
QUICK = Sizes((500, 1000, 2000), 1, 3, 500, 5000, 3, 1000.0, 2.0, 2, 500, 1000, 2)
# For the smoke test: proves the machinery end to end against the real server in a few seconds.
SMOKE = Sizes((100,), 1, 1, 100, 1000, 1, 200.0, 1.0, 1, 50, 200, 1, racing=False)


def split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts)]


def _ratio(row: Row, ceiling: Row | None) -> None:
    if ceiling is not None and ceiling.samples and row.samples and ceiling.median:
        row.ratio = row.median / ceiling.median


class Bench:
    """One benchmark run: the temp dir, the load clients, and every server it starts."""

    def __init__(self, sizes: Sizes, workers: Workers, tmp: Path, http: aiohttp.ClientSession) -> None:
        self.sizes = sizes
        self.workers = workers
        self.tmp = tmp
        self.http = http
        self.rows: list[Row] = []
        self.servers: list[Server] = []
        self.secret = secrets.token_urlsafe(48)
        self.log = print
        # --profile: py-spy samples our server during every timed window (collapsed stacks).
        self.profile_dir: Path | None = None
        self.profiles = 0

    # -- servers ---------------------------------------------------------------------------

    def _ours_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DIAGNOXIX_SECRET_KEY"] = self.secret
        env["DIAGNOXIX_SQLITE_SYNCHRONOUS"] = "FULL"
        # Every load client connects from 127.0.0.1: tens of thousands of sockets from one address,
        # thousands of handshakes a second in the reconnect storm.
        env["DIAGNOXIX_MAX_CONNECTIONS_PER_ADDRESS"] = "1000000"
        env["DIAGNOXIX_RATE_LIMIT"] = "0"
        env["DIAGNOXIX_API_KEY_RATE_LIMIT"] = "0"
        return env

    def new_db(self, name: str) -> tuple[Path, str]:
        """A fresh database with an API key made by the real CLI (`run.py apikey create`)."""
        db = self.tmp / f"{name}.sqlite3"
        out = subprocess.run(
            [python(), "run.py", "apikey", "create", "bench", "--db", str(db)],
            cwd=Path(__file__).resolve().parent.parent,
            env=self._ours_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return db, out.stdout.strip().splitlines()[-1]

    async def start(self, system: str, *, db: Path | None = None, port: int | None = None) -> Server:
        port = port or free_port()
        log = self.tmp / f"{system}-{port}.log"
        env = dict(os.environ)
        if system == "ours":
            assert db is not None
            argv = [python(), "run.py", "--port", str(port), "--db", str(db)]
            env, ready = self._ours_env(), "/healthz"
        elif system == "ours-service":
            assert db is not None
            argv = [python(), "-m", "bench.our_server", "--port", str(port), "--db", str(db)]
            env, ready = self._ours_env(), "/healthz"
        elif system in ("ceiling", "ceiling-deflate"):
            argv = [python(), "-m", "bench.ceiling_server", "--port", str(port)]
            argv += ["--deflate"] if system == "ceiling-deflate" else []
            ready = "/ping"
        elif system == "peer":
            argv = [python(), "-m", "bench.peer_server", "--port", str(port)]
            ready = "/ping"
        else:
            raise ValueError(system)
        server = Server(system, argv, port=port, log_path=log, ready_path=ready, env=env)
        self.servers.append(server)
        server.start()
        await server.wait_ready(self.http)
        return server

    async def stop(self, server: Server) -> float:
        return await server.stop()

    # -- clients ---------------------------------------------------------------------------

    @staticmethod
    def _kind(system: str) -> str:
        return {"peer": "sio", "ceiling": "raw", "ceiling-deflate": "raw"}.get(system, "ours")

    async def connect(self, system: str, port: int, users: list[str], **options: Any) -> None:
        parts = split(users, self.workers.receivers)
        replies = await self.workers.call_receivers(
            "connect",
            CONNECT_TIMEOUT,
            per_worker=[{"users": part} for part in parts],
            kind=self._kind(system),
            port=port,
            secret=self.secret,
            **options,
        )
        failed = sum(r["failed"] for r in replies)
        if failed:
            raise BenchError(f"{failed} of {len(users)} connections to {system} failed")

    async def settle(self, server: Server) -> None:
        """Wait until the server has done what the connections just made gave it to do."""
        await asyncio.sleep(SETTLE_SECONDS)
        deadline = time.monotonic() + SETTLE_MAX_SECONDS - SETTLE_SECONDS
        while time.monotonic() < deadline:
            before = cpu_seconds(server.pid)
            await asyncio.sleep(IDLE_WINDOW)
            if (cpu_seconds(server.pid) - before) / IDLE_WINDOW < IDLE_CORES:
                return

    async def disconnect(self) -> None:
        await self.workers.call_receivers("close", 60.0)

    def meter(self, server: Server) -> CpuMeter:
        return CpuMeter(
            {
                "clients": [*self.workers.pids, os.getpid()],
                "server": [server.pid],
            }
        )

    async def timed_delivery(
        self,
        server: Server,
        expected: list[int],
        trigger: Callable[[], Awaitable[Any]],
        *,
        parse: bool = False,
    ) -> tuple[float, dict[str, list[float]], list[dict[str, Any]]]:
        """Arm the clients, run `trigger()`, wait for every frame; seconds from trigger to last frame."""
        await self.workers.call_receivers(
            "arm", 10.0, per_worker=[{"expected": n, "parse": parse} for n in expected]
        )
        meter = self.meter(server)
        profiler = self._profiler(server)
        meter.start()
        started = time.monotonic()
        await trigger()
        replies = await self.workers.call_receivers("wait", BURST_TIMEOUT + 10, within=BURST_TIMEOUT)
        cpu = meter.stop()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await asyncio.to_thread(profiler.wait, 30)
        missing = sum(r["expected"] - r["received"] for r in replies)
        if missing:
            raise BenchError(f"{missing} frames never arrived from {server.name}")
        last = max(r["t_last"] for r in replies if r["expected"])
        return last - started, cpu, replies

    def _profiler(self, server: Server) -> subprocess.Popen[bytes] | None:
        if self.profile_dir is None or not server.name.startswith("ours"):
            return None
        self.profiles += 1
        out = self.profile_dir / f"{self.profiles:02d}-{server.name}-{server.port}.txt"
        argv = [str(Path(python()).parent / "py-spy"), "record", "--pid", str(server.pid)]
        argv += ["--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # let py-spy attach before the window opens
        return proc

    def _record_cpu(self, row: Row, cpu: dict[str, list[float]]) -> None:
        row.client_max.append(max(cpu["clients"]))
        row.client_total.append(sum(cpu["clients"]))
        row.server_cpu.append(cpu["server"][0])
        row.others_cpu.append(cpu["others"][0])
        row.walls.append(cpu["wall"][0])

    async def post_json(self, port: int, path: str, body: Any, api_key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        async with self.http.post(f"http://127.0.0.1:{port}{path}", data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status not in (200, 201):
                raise BenchError(f"POST {path} -> {resp.status}: {text[:300]}")
            return json.loads(text)

    async def post_batches(self, port: int, bodies: list[bytes], api_key: str | None) -> None:
        """All batch requests of a burst at once, as a backend flushing its outbox would."""
        await asyncio.gather(*(self.post_json(port, "/v1/notifications", body, api_key) for body in bodies))

    # -- 1 + 4: idle memory per connection, then broadcast on the same sockets ---------------

    async def memory_and_broadcast(self, systems: list[str]) -> None:
        sizes = self.sizes
        top = max(sizes.memory_counts)
        users = [user_id(i) for i in range(top)]
        memory: dict[tuple[str, int], Row] = {}
        broadcast: dict[str, Row] = {}
        for system in systems:
            for count in sizes.memory_counts:
                memory[system, count] = Row(f"1. idle memory/conn @{count:,}", system, "KiB", [])
            broadcast[system] = Row(f"4. broadcast to {top:,}", system, "recipients/s", [])
            # Idle sockets cost little until the first frame: deflate state is allocated then.
            memory[system, -1] = Row(f"1. memory/conn @{top:,} after a broadcast", system, "KiB", [])
            for run in range(sizes.memory_runs):
                self.log(f"  memory+broadcast: {system} run {run + 1}/{sizes.memory_runs}")
                db, key = self.new_db(f"mem-{system}-{run}") if system == "ours" else (None, None)
                server = await self.start(system, db=db)
                await asyncio.sleep(0.5)
                base = rss_kib(server.pid)
                done = 0
                for count in sizes.memory_counts:
                    await self.connect(system, server.port, users[done:count], deflate=True)
                    done = count
                    await self.settle(server)
                    memory[system, count].samples.append((rss_kib(server.pid) - base) / count)
                await self._broadcasts(system, server, key, top, broadcast[system])
                await self.settle(server)
                memory[system, -1].samples.append((rss_kib(server.pid) - base) / top)
                await self.disconnect()
                await self.stop(server)
        for count in [*sizes.memory_counts, -1]:
            ceiling = memory.get(("ceiling", count))
            for system in systems:
                row = memory[system, count]
                _ratio(row, ceiling)
                if system == "ours" and count > 0:
                    row.target = "≤ 1.2x ceiling"
                    row.met = None if row.ratio is None else row.ratio <= 1.2
                if system == "ceiling-deflate":
                    row.note = "aiohttp's default: accepts the offered deflate"
                elif system == "peer":
                    row.note = "accepts deflate (no switch)"
                elif system == "ours":
                    row.note = "declines deflate (ws_compress=False)"
                self.rows.append(row)
        ceiling_b = broadcast.get("ceiling")
        for system, row in broadcast.items():
            _ratio(row, ceiling_b)
            last_ms = [top / rate * 1000 for rate in row.samples]
            row.note = f"last frame after {statistics.median(last_ms):.0f} ms (median)"
            if system == "ceiling-deflate":
                row.note += "; compresses per socket"
            if system == "ours":
                row.target = "≥ 0.8x ceiling"
                row.met = None if row.ratio is None else row.ratio >= 0.8
                row.note += "; POST /v1/broadcasts, stored first"
            self.rows.append(row)

    async def _broadcasts(self, system: str, server: Server, key: str | None, top: int, row: Row) -> None:
        parts = split([user_id(i) for i in range(top)], self.workers.receivers)

        async def trigger() -> None:
            if system == "ours":
                body = {"title": NOTE_TITLE, "message": NOTE_MESSAGE, "data": note_data(0), "type": NOTE_TYPE}
                await self.post_json(server.port, "/v1/broadcasts", body, key)
            else:
                await self.post_json(server.port, "/bench/broadcast", {})

        for _ in range(self.sizes.broadcasts_per_run):
            seconds, cpu, _ = await self.timed_delivery(server, [len(p) for p in parts], trigger)
            row.samples.append(top / seconds)
            self._record_cpu(row, cpu)
            await asyncio.sleep(0.3)

    # -- 2: targeted burst -----------------------------------------------------------------

    async def targeted(self, systems: list[str]) -> None:
        sizes = self.sizes
        users = [user_id(i) for i in range(sizes.burst_users)]
        parts = split(users, self.workers.receivers)
        owner = {u: w for w, part in enumerate(parts) for u in part}
        plan = burst_plan(sizes.burst_users, sizes.burst_count)
        per_worker = Counter(owner[u] for _, u in plan)
        expected = [per_worker[w] for w in range(self.workers.receivers)]
        title = f"2. targeted, {sizes.burst_count:,} to {sizes.burst_users:,} users"
        rows: dict[str, Row] = {}
        for system in systems:
            self.log(f"  targeted: {system}")
            db = key = None
            if system.startswith("ours"):
                db, key = self.new_db(f"burst-{system}")
            server_kind = {"ours-service": "ours-service", "ours-typed": "ours-service", "ours-http": "ours"}
            server = await self.start(server_kind.get(system, system), db=db)
            await self.connect(system, server.port, users)
            await self.settle(server)
            if system == "ours-http":
                bodies = [
                    json.dumps(
                        {
                            "notifications": [
                                {
                                    "user_id": u,
                                    "type": NOTE_TYPE,
                                    "title": NOTE_TITLE,
                                    "message": NOTE_MESSAGE,
                                }
                                | {"data": note_data(i)}
                                for i, u in plan[start : start + 1000]
                            ]
                        }
                    ).encode()
                    for start in range(0, len(plan), 1000)
                ]

                trigger = functools.partial(self.post_batches, server.port, bodies, key)

            else:
                spec = {"users": sizes.burst_users, "count": sizes.burst_count}
                await self.post_json(server.port, "/bench/prepare", spec)
                path = {"ours-service": "/bench/burst?mode=send", "ours-typed": "/bench/burst?mode=typed"}
                burst_path = path.get(system, "/bench/burst")

                trigger = functools.partial(self.post_json, server.port, burst_path, {})

            row = rows[system] = Row(title, system, "notif/s", [])
            for _ in range(sizes.burst_runs):
                seconds, cpu, _ = await self.timed_delivery(server, expected, trigger)
                row.samples.append(sizes.burst_count / seconds)
                self._record_cpu(row, cpu)
                await asyncio.sleep(0.5)
            await self.disconnect()
            await self.stop(server)
        ceiling, peer = rows.get("ceiling"), rows.get("peer")
        notes = {
            "ceiling": "no store, pre-built frames",
            "peer": "no store, emit to a room per user",
            "ours-service": "service.send(), 1,000 per call, fsync (FULL)",
            "ours-typed": "create_and_send_notification() x N concurrent, fsync",
            "ours-http": "POST /v1/notifications, 1,000 per request, fsync",
        }
        for system, row in rows.items():
            _ratio(row, ceiling)
            row.note = notes.get(system, "")
            if system.startswith("ours") and ceiling is not None and peer is not None:
                vs_peer = row.median / peer.median
                row.target = "≥ 0.6x ceiling, ≥ 3x peer"
                row.met = row.ratio is not None and row.ratio >= 0.6 and vs_peer >= 3.0
                row.note += f"; {vs_peer:.1f}x peer"
            self.rows.append(row)

    # -- 3: latency under steady load ------------------------------------------------------

    async def steady(self, systems: list[str]) -> None:
        sizes = self.sizes
        users = [user_id(i) for i in range(sizes.steady_users)]
        parts = split(users, self.workers.receivers)
        owner = {u: w for w, part in enumerate(parts) for u in part}
        total = int(sizes.steady_rate * sizes.steady_seconds)
        per_worker = Counter(owner[users[i % len(users)]] for i in range(total))
        expected = [per_worker[w] for w in range(self.workers.receivers)]
        label = f"3. latency @{sizes.steady_rate:,.0f}/s, {sizes.steady_seconds:.0f} s"
        results: dict[str, tuple[Row, Row, Row]] = {}
        for system in systems:
            self.log(f"  steady: {system}")
            db, key = self.new_db(f"steady-{system}") if system == "ours" else (None, None)
            server = await self.start(system, db=db)
            await self.connect(system, server.port, users)
            await self.settle(server)
            p50 = Row(f"{label}: p50", system, "ms", [])
            p99 = Row(f"{label}: p99", system, "ms", [])
            # The server's CPU time (every thread) over the run, per request it answered.
            cost = Row(f"{label}: server CPU per request", system, "ms", [])
            http_p99: list[float] = []
            errors = 0

            async def trigger(
                port: int = server.port,
                key: str | None = key,
                system: str = system,
                http_p99: list[float] = http_p99,
            ) -> None:
                nonlocal errors
                reply = await self.workers.sender(
                    "steady",
                    sizes.steady_seconds + 60,
                    kind=self._kind(system),
                    port=port,
                    users=users,
                    rate=sizes.steady_rate,
                    seconds=sizes.steady_seconds,
                    api_key=key,
                )
                errors += reply["errors"]
                http_p99.append(_percentile(reply["http_durations"], 99) * 1000)

            for _ in range(sizes.steady_runs):
                _, cpu, _ = await self.timed_delivery(server, expected, trigger, parse=True)
                latencies = [
                    x for r in await self.workers.call_receivers("latencies", 30.0) for x in r["latencies"]
                ]
                p50.samples.append(_percentile(latencies, 50) * 1000)
                p99.samples.append(_percentile(latencies, 99) * 1000)
                cost.samples.append(cpu["server"][0] * cpu["wall"][0] / total * 1000)
                for row in (p50, p99, cost):
                    self._record_cpu(row, cpu)
                await asyncio.sleep(0.5)
            p99.note = f"HTTP 201 p99 {statistics.median(http_p99):.1f} ms; {errors} errors"
            if system == "ours":
                p99.target = "< 10 ms"
                p99.met = p99.median < 10.0 and errors == 0
            results[system] = (p50, p99, cost)
            await self.disconnect()
            await self.stop(server)
        ceiling = results.get("ceiling")
        for index in (0, 1, 2):
            for rows in results.values():
                _ratio(rows[index], ceiling[index] if ceiling else None)
                self.rows.append(rows[index])
        ours = results.get("ours")
        if ours is not None and ours[2].ratio is not None:
            ours[2].target = "≤ 2x ceiling"
            ours[2].met = ours[2].ratio <= 2.0

    # -- 5: reconnect storm ----------------------------------------------------------------

    async def storm(self) -> None:
        sizes = self.sizes
        users = [user_id(i) for i in range(sizes.storm_clients)]
        parts = split(users, self.workers.receivers)
        db, key = self.new_db("storm")
        port = free_port()
        server = await self.start("ours", db=db, port=port)
        await self.connect("ours", port, users, v1=True, since=0, track=True)

        async def one_each() -> dict[str, list[int]]:
            """One notification to every user (batches of 1,000); returns the seqs by user."""
            seqs: dict[str, list[int]] = {}
            for start in range(0, len(users), 1000):
                body = {
                    "notifications": [
                        {"user_id": u, "type": NOTE_TYPE, "title": NOTE_TITLE, "message": NOTE_MESSAGE}
                        | {"data": note_data(i)}
                        for i, u in enumerate(users[start : start + 1000], start)
                    ]
                }
                reply = await self.post_json(port, "/v1/notifications", body, key)
                for note in reply["notifications"]:
                    seqs.setdefault(note["user_id"], []).append(note["seq"])
            return seqs

        await self.timed_delivery(server, [len(p) for p in parts], one_each, parse=False)
        resumed = Row(f"5. reconnect storm, {len(users):,} clients: all resumed", "ours", "s", [])
        lost = duplicated = 0
        downtimes: list[float] = []
        for run in range(sizes.storm_runs):
            self.log(f"  storm: run {run + 1}/{sizes.storm_runs}")
            meter = CpuMeter({"clients": [*self.workers.pids, os.getpid()], "server": []})
            stopped_at = time.monotonic()
            await self.stop(server)
            closed = await self.workers.call_receivers("wait_closed", 30.0, within=20.0)
            if any(r["open"] for r in closed):
                raise BenchError("clients still connected after the server stopped")
            server = await self.start("ours", db=db, port=port)
            downtimes.append(time.monotonic() - stopped_at)
            meter.pids["server"] = [server.pid]
            missed = await one_each()  # sent while every client is away
            meter.start()
            reconnect_at = time.monotonic()
            await self.workers.call_receivers("reconnect", 10.0)
            # Sent while the storm is on: tests the replay-to-live switch.
            during = await one_each() if sizes.racing else {}
            expected = {u: missed.get(u, []) + during.get(u, []) for u in users}
            replies = await self.workers.call_receivers(
                "storm_expect",
                STORM_WAIT_SECONDS + 30,
                per_worker=[{"expected": {u: expected[u] for u in part}} for part in parts],
                since=reconnect_at,
                within=STORM_WAIT_SECONDS,
            )
            self._record_cpu(resumed, meter.stop())
            for reply in replies:
                for example in reply["incomplete_examples"]:
                    self.log(f"    incomplete: {example}")
            lost += sum(r["lost"] for r in replies)
            duplicated += sum(r["duplicated"] for r in replies)
            if all(r["t_complete"] is not None for r in replies):
                resumed.samples.append(max(r["t_complete"] for r in replies))
            else:
                resumed.note = "some clients never resumed; "
        resumed.target = "≤ 10 s, 0 lost, 0 dup"
        resumed.met = bool(resumed.samples) and resumed.median <= 10.0 and lost == 0 and duplicated == 0
        resumed.note += (
            f"lost {lost}, duplicated {duplicated} "
            f"(of {(1 + sizes.racing) * len(users) * sizes.storm_runs:,} sent while away or racing); "
            f"restart {statistics.median(downtimes):.1f} s"
        )
        self.rows.append(resumed)
        await self.disconnect()
        await self.stop(server)

    async def stop_all(self) -> None:
        for server in self.servers:
            await server.stop()


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]
