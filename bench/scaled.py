"""The scaled-out scenario (issue 16): two processes on PostgreSQL and Redis against one on SQLite.

In one run, on the same load clients and the same message:

- `ours`: one `run.py` process on an SQLite file, as the targeted and steady scenarios start it;
- `ours-scaled`: two `run.py` processes sharing one PostgreSQL database (`DIAGNOXIX_STORE`) and one
  Redis (`DIAGNOXIX_BROKER`), the same `DIAGNOXIX_SECRET_KEY`, an API key made by
  `run.py apikey create --store`; the clients connect half to each;
- `ceiling`: bare aiohttp (`bench/ceiling_server.py`), no store, for scale.

Two steps per system: (S1) HTTP batches of 1,000 through one process, every notification delivered
to the connected clients (for the scaled system, half of them on the other process, through Redis):
throughput and server CPU per delivered notification; (S2) one notification per request at a fixed
rate (two sender processes at half the rate each; for the scaled system one sends to each process):
server CPU per request and latency from send to frame. "Server CPU" counts every server-side
process: ours, and for the scaled system also the postmaster with all its children and
redis-server. PostgreSQL and Redis are throwaway servers on loopback, stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backing import BackingError, Postgres, Redis, reaped_cpu_seconds
from bench.common import (
    NOTE_MESSAGE,
    NOTE_TITLE,
    NOTE_TYPE,
    REPO_ROOT,
    burst_plan,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    note_data,
    user_id,
)
from bench.procs import BenchError, Server, Workers, python
from bench.scaled_report import Results, ratio_table, rows
from bench.scenarios import Bench, split

DELIVERY_TIMEOUT = 60.0
SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class ScaledSizes:
    users: int
    burst_count: int
    burst_runs: int
    rate: float
    seconds: float
    steady_runs: int
    # The whole scenario, servers' start and stop included; the run stops when it is exceeded.
    limit_seconds: float
    # S0: the connected clients idle this long, to see what the servers use with no sends.
    idle_seconds: float = 3.0
    # The smoke run leaves the ceiling out: it proves the machinery, and CI time counts.
    ceiling: bool = True


# S2's rate: 250/s, not the steady scenario's 1,000/s. On two cores shared with the load clients
# (and, here, with other people's work), the scaled system at 1,000/s or even 400/s needs more CPU
# than there is (2-3 ms of CPU a request, measured), so its latency would be a queue's length.
SIZES = {
    "full": ScaledSizes(2000, 20000, 5, 250.0, 5.0, 3, 600.0),
    "quick": ScaledSizes(1000, 10000, 3, 250.0, 4.0, 2, 240.0),
    "smoke": ScaledSizes(100, 1000, 1, 200.0, 1.0, 1, 60.0, idle_seconds=0.5, ceiling=False),
}


@dataclass
class Group:
    """Processes counted as one: looked up again at the end (PostgreSQL starts backends), plus the
    CPU of the children `reaper` waited for meanwhile (a backend that exited inside the window)."""

    pids: Callable[[], list[int]]
    reaper: int | None = None


class TreeMeter:
    """CPU seconds each group of processes used between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, Group]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}
        self.reaped: dict[str, float] = {}
        self.machine = 0.0
        self.started = 0.0

    def start(self) -> None:
        self.before = {name: {p: cpu_seconds(p) for p in g.pids()} for name, g in self.groups.items()}
        self.reaped = {n: reaped_cpu_seconds(g.reaper) for n, g in self.groups.items() if g.reaper}
        self.machine = machine_busy_seconds()
        self.started = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Per group, CPU seconds; "wall": seconds; "machine": every process on the machine."""
        used: dict[str, float] = {"wall": time.monotonic() - self.started}
        for name, group in self.groups.items():
            before = self.before[name]
            total = sum(cpu_seconds(p) - before.get(p, 0.0) for p in group.pids())
            if group.reaper:
                total += reaped_cpu_seconds(group.reaper) - self.reaped[name]
            used[name] = total
        used["machine"] = machine_busy_seconds() - self.machine
        return used


@dataclass
class System:
    name: str
    servers: list[Server]
    key: str | None
    groups: dict[str, Group]
    # S1's batches go to the first server; S2's senders use these ports (one per sender).
    send_ports: list[int]


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


class Scaled:
    """One run of the scenario on a `Bench` (its load clients, temp dir and HTTP session)."""

    def __init__(self, bench: Bench, sizes: ScaledSizes, senders: Workers) -> None:
        self.bench = bench
        self.sizes = sizes
        self.senders = senders
        self.users = [user_id(i) for i in range(sizes.users)]
        self.owner: dict[str, int] = {}
        self.results: dict[str, Results] = {}
        self.profiles = 0

    # -- systems ---------------------------------------------------------------------------

    async def start_sqlite(self) -> System:
        db, key = self.bench.new_db("scaled-sqlite")
        server = await self.bench.start("ours", db=db)
        return System("ours", [server], key, {"ours": Group(lambda: [server.pid])}, [server.port] * 2)

    async def start_ceiling(self) -> System:
        server = await self.bench.start("ceiling")
        return System("ceiling", [server], None, {"ceiling": Group(lambda: [server.pid])}, [server.port] * 2)

    async def start_scaled(self, pg: Postgres, redis: Redis) -> System:
        await asyncio.to_thread(pg.psql, "CREATE DATABASE bench")
        dsn = pg.dsn("bench")
        env = self.bench._ours_env() | {"DIAGNOXIX_STORE": dsn, "DIAGNOXIX_BROKER": redis.url}
        made = await asyncio.to_thread(
            subprocess.run,
            [python(), "run.py", "apikey", "create", "bench", "--store", dsn],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if made.returncode != 0:
            raise BenchError(f"run.py apikey create --store failed: {made.stderr[-1000:]}")
        key = made.stdout.strip().splitlines()[-1]
        servers = []
        for name in ("ours-scaled-a", "ours-scaled-b"):
            port = free_port()
            argv = [python(), "run.py", "--port", str(port)]
            log = self.bench.tmp / f"{name}-{port}.log"
            servers.append(Server(name, argv, port=port, log_path=log, ready_path="/healthz", env=env))
        self.bench.servers.extend(servers)
        for server in servers:
            server.start()
        await asyncio.gather(*(s.wait_ready(self.bench.http) for s in servers))
        a, b = servers
        groups = {
            "ours A": Group(lambda: [a.pid]),
            "ours B": Group(lambda: [b.pid]),
            "pg backends": Group(lambda: pg.pids(backends=True)),
            "pg others": Group(lambda: pg.pids(backends=False), reaper=pg.pid),
            "redis": Group(lambda: [redis.pid]),
        }
        return System("ours-scaled", servers, key, groups, [a.port, b.port])

    async def connect(self, system: System) -> None:
        """Half of the users to each process (all to the one when there is one)."""
        halves = split(self.users, len(system.servers))
        self.owner = {}
        for server, half in zip(system.servers, halves, strict=True):
            await self.bench.connect(system.name, server.port, half)
            for worker, part in enumerate(split(half, self.bench.workers.receivers)):
                self.owner.update((u, worker) for u in part)
        await asyncio.sleep(SETTLE_SECONDS)

    def expected(self, users: list[str]) -> list[int]:
        per_worker = Counter(self.owner[u] for u in users)
        return [per_worker[w] for w in range(self.bench.workers.receivers)]

    # -- measuring -------------------------------------------------------------------------

    async def timed(
        self, system: System, users: list[str], trigger: Callable[[], Awaitable[Any]], *, parse: bool
    ) -> dict[str, float]:
        """Arm the clients, run `trigger()`, wait for every frame; CPU seconds per group, wall,
        and "seconds" from the trigger to the last frame."""
        workers = self.bench.workers
        arms = [{"expected": n, "parse": parse} for n in self.expected(users)]
        await workers.call_receivers("arm", 10.0, per_worker=arms)
        clients = Group(lambda: [*workers.pids, *self.senders.pids, os.getpid()])
        meter = TreeMeter(system.groups | {"clients": clients})
        profilers = self._profilers(system)
        meter.start()
        started = time.monotonic()
        await trigger()
        replies = await workers.call_receivers("wait", DELIVERY_TIMEOUT + 10, within=DELIVERY_TIMEOUT)
        used = meter.stop()
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for profiler in profilers:
            await asyncio.to_thread(profiler.wait, 30)
        missing = sum(r["expected"] - r["received"] for r in replies)
        if missing:
            raise BenchError(f"{missing} frames never arrived from {system.name}")
        used["seconds"] = max(r["t_last"] for r in replies if r["expected"]) - started
        return used

    def _profilers(self, system: System) -> list[subprocess.Popen[bytes]]:
        """--profile: py-spy samples each of our processes in the window (raw collapsed stacks)."""
        if self.bench.profile_dir is None or system.name == "ceiling":
            return []
        started = []
        for server in system.servers:
            self.profiles += 1
            out = self.bench.profile_dir / f"scaled-{self.profiles:02d}-{server.name}.txt"
            argv = [str(Path(python()).parent / "py-spy"), "record", "--pid", str(server.pid)]
            argv += ["--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"]
            started.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)  # let py-spy attach before the window opens
        return started

    def _server_seconds(self, system: System, used: dict[str, float]) -> float:
        return sum(used[name] for name in system.groups)

    async def idle(self, system: System) -> None:
        """S0: what the server-side processes use with every client connected and nothing sent."""
        result = self.results.setdefault(system.name, Results())
        meter = TreeMeter(system.groups)
        meter.start()
        await asyncio.sleep(self.sizes.idle_seconds)
        used = meter.stop()
        result.idle_cores = self._server_seconds(system, used) / used["wall"]
        result.idle_parts = {name: used[name] / used["wall"] for name in system.groups}

    async def burst(self, system: System) -> None:
        """S1: batches of 1,000 through the first process, all at once, as a backend's outbox."""
        sizes, result = self.sizes, self.results.setdefault(system.name, Results())
        plan = burst_plan(sizes.users, sizes.burst_count)
        first = system.servers[0]
        if system.name == "ceiling":
            spec = {"users": sizes.users, "count": sizes.burst_count}
            await self.bench.post_json(first.port, "/bench/prepare", spec)

            async def trigger() -> None:
                await self.bench.post_json(first.port, "/bench/burst", {})

        else:
            bodies = [
                json.dumps(
                    {
                        "notifications": [
                            {"user_id": u, "type": NOTE_TYPE, "title": NOTE_TITLE, "message": NOTE_MESSAGE}
                            | {"data": note_data(i)}
                            for i, u in plan[start : start + 1000]
                        ]
                    }
                ).encode()
                for start in range(0, len(plan), 1000)
            ]

            async def trigger() -> None:
                await self.bench.post_batches(first.port, bodies, system.key)

        for run in range(sizes.burst_runs):
            self.bench.log(f"  scaled S1: {system.name} burst {run + 1}/{sizes.burst_runs}")
            used = await self.timed(system, [u for _, u in plan], trigger, parse=False)
            result.burst_rate.append(sizes.burst_count / used["seconds"])
            result.burst_cpu_us.append(self._server_seconds(system, used) / sizes.burst_count * 1e6)
            for name in system.groups:
                result.burst_parts.setdefault(name, []).append(used[name] / sizes.burst_count * 1e6)
            self._others(system, used, "S1")
            await asyncio.sleep(0.5)

    async def steady(self, system: System) -> None:
        """S2: one notification per request at a fixed rate, two senders at half the rate each."""
        sizes, result = self.sizes, self.results.setdefault(system.name, Results())
        per_sender = int(sizes.rate / 2 * sizes.seconds)
        total = 2 * per_sender
        users = [self.users[i % len(self.users)] for i in range(per_sender)] * 2
        kind = "raw" if system.name == "ceiling" else "ours"
        errors = 0

        async def trigger() -> None:
            nonlocal errors
            calls = [
                self.senders.call(
                    index,
                    "steady",
                    sizes.seconds + 60,
                    kind=kind,
                    port=port,
                    users=self.users,
                    rate=sizes.rate / 2,
                    seconds=sizes.seconds,
                    api_key=system.key,
                )
                for index, port in enumerate(system.send_ports)
            ]
            replies = await asyncio.gather(*calls)
            errors += sum(r["errors"] for r in replies)
            durations = [d for r in replies for d in r["http_durations"]]
            result.http_p99.append(_percentile(durations, 99) * 1000)

        for run in range(sizes.steady_runs):
            self.bench.log(
                f"  scaled S2: {system.name} {sizes.rate:,.0f}/s run {run + 1}/{sizes.steady_runs}"
            )
            used = await self.timed(system, users, trigger, parse=True)
            latencies = [
                x for r in await self.bench.workers.call_receivers("latencies", 30.0) for x in r["latencies"]
            ]
            result.p50.append(_percentile(latencies, 50) * 1000)
            result.p99.append(_percentile(latencies, 99) * 1000)
            result.request_cpu_us.append(self._server_seconds(system, used) / total * 1e6)
            idle = result.idle_cores * used["wall"]
            result.request_net_us.append((self._server_seconds(system, used) - idle) / total * 1e6)
            for name in system.groups:
                result.request_parts.setdefault(name, []).append(used[name] / total * 1e6)
            self._others(system, used, "S2")
            await asyncio.sleep(0.5)
        result.errors += errors

    def _others(self, system: System, used: dict[str, float], step: str) -> None:
        result = self.results[system.name]
        server = self._server_seconds(system, used)
        others = max(0.0, used["machine"] - server - used["clients"])
        result.server_cores.setdefault(step, []).append(server / used["wall"])
        result.other_cores.setdefault(step, []).append(others / used["wall"])

    async def measure(self, system: System) -> None:
        try:
            await self.connect(system)
            await self.idle(system)
            await self.burst(system)
            await self.steady(system)
            await self.bench.disconnect()
        finally:
            for server in system.servers:
                await server.stop()


async def run_scaled(bench: Bench, mode: str) -> None:
    """The scenario, bounded by its sizes' time limit; every process it starts is stopped by PID."""
    sizes = SIZES[mode]
    try:
        pg = Postgres()
        redis = Redis(Path(tempfile.mkdtemp(prefix="redis-", dir=bench.tmp)))
    except BackingError as exc:
        bench.log(f"  scaled: skipped ({exc})")
        return
    senders = Workers(0, senders=2)
    scaled = Scaled(bench, sizes, senders)
    started = len(bench.servers)
    try:
        async with asyncio.timeout(sizes.limit_seconds):
            try:
                pg.start()
                redis.start()
            except (BackingError, subprocess.SubprocessError) as exc:
                raise BenchError(f"scaled: {exc}") from exc
            bench.log(f"  scaled: PostgreSQL PID {pg.pid} on port {pg.port}, Redis PID {redis.pid}")
            starts = [scaled.start_sqlite, lambda: scaled.start_scaled(pg, redis)]
            for start in [scaled.start_ceiling] * sizes.ceiling + starts:
                await scaled.measure(await start())
        s0 = f"S0. idle, {sizes.users:,} connected"
        s1 = f"S1. HTTP batch, {sizes.burst_count:,} to {sizes.users:,} users"
        s2 = f"S2. {sizes.rate:,.0f}/s, one per request, {sizes.seconds:.0f} s"
        bench.rows.extend(rows(s0, s1, s2, scaled.results))
        bench.log(ratio_table(scaled.results))
    finally:
        for server in bench.servers[started:]:
            server.kill_now()
        senders.stop()
        redis.stop()
        pg.stop()
