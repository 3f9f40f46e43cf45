"""The processes a benchmark run starts: servers under test and load-client workers.

Everything started here is remembered by PID and stopped by PID (SIGTERM, then SIGKILL after a
grace period), never by name: other people run tests on this machine at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bench.client import worker_main
from bench.common import REPO_ROOT, cpu_seconds, machine_busy_seconds

READY_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 15.0


class BenchError(RuntimeError):
    """The benchmark cannot go on (a server did not start, a client failed)."""


class Server:
    """One server process; `ready_path` answers 200 once it serves."""

    def __init__(
        self, name: str, argv: list[str], *, port: int, log_path: Path, ready_path: str, env: dict[str, str]
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.ready_path = ready_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited while starting:\n{self.log_tail()}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise BenchError(f"{self.name} did not answer {self.ready_path} in {READY_TIMEOUT_SECONDS:.0f} s")

    async def stop(self) -> float:
        """SIGTERM, wait for the exit (SIGKILL after the grace period); returns seconds taken."""
        started = time.monotonic()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0.0
        proc.send_signal(signal.SIGTERM)
        deadline = started + STOP_GRACE_SECONDS
        # A child's exit is not awaitable from Popen; poll it briefly.
        while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return time.monotonic() - started

    def kill_now(self) -> None:
        """Last-resort cleanup (no event loop): terminate this one process by its PID."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Workers:
    """Load-client processes, each driven over its own pipe; the last `senders` only send HTTP."""

    def __init__(self, receivers: int, senders: int = 1) -> None:
        # spawn: a fresh interpreter per worker, no inherited event loop or sockets.
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(receivers + senders):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.receivers = receivers

    @property
    def receiver_pids(self) -> list[int]:
        return [p.pid for p in self.procs[: self.receivers] if p.pid is not None]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    async def call(self, index: int, command: str, limit: float, **args: Any) -> dict[str, Any]:
        """Send one command to one worker and wait at most `limit` seconds for its reply."""
        pipe = self.pipes[index]
        pipe.send((command, args))

        def receive() -> dict[str, Any]:
            if not pipe.poll(limit):
                raise BenchError(f"load client {index} did not answer {command!r} in {limit:.0f} s")
            reply: dict[str, Any] = pipe.recv()
            return reply

        reply = await asyncio.to_thread(receive)
        if "error" in reply:
            raise BenchError(f"load client {index} failed {command!r}: {reply['error']}")
        return reply

    async def call_receivers(
        self, command: str, limit: float, per_worker: list[dict[str, Any]] | None = None, **args: Any
    ) -> list[dict[str, Any]]:
        calls = [
            self.call(i, command, limit, **args, **(per_worker[i] if per_worker else {}))
            for i in range(self.receivers)
        ]
        return list(await asyncio.gather(*calls))

    async def sender(self, command: str, limit: float, **args: Any) -> dict[str, Any]:
        return await self.call(len(self.procs) - 1, command, limit, **args)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("exit", {}))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(5)


class CpuMeter:
    """CPU used by a set of processes between `start()` and `stop()`, as fractions of one core."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.before: dict[int, float] = {}
        self.machine_before = 0.0
        self.started = 0.0

    def start(self) -> None:
        self.before = {pid: cpu_seconds(pid) for group in self.pids.values() for pid in group}
        self.machine_before = machine_busy_seconds()
        self.started = time.monotonic()

    def stop(self) -> dict[str, list[float]]:
        """Per group, each process's CPU in cores; "others": what the rest of the machine used."""
        wall = max(time.monotonic() - self.started, 1e-6)
        used = {
            name: [(cpu_seconds(pid) - self.before.get(pid, 0.0)) / wall for pid in group]
            for name, group in self.pids.items()
        }
        ours = sum(sum(values) for values in used.values())
        machine = (machine_busy_seconds() - self.machine_before) / wall
        used["others"] = [max(0.0, machine - ours)]
        used["wall"] = [wall]
        return used


def python() -> str:
    """The interpreter running the benchmark (the project's .venv when started by `make bench`)."""
    return sys.executable
