"""Running the real server as its own process (`python run.py ...`) for tests that need one:
kill -9, SIGTERM, restarts, the CLI. Each test ends only the processes it started, by PID."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_PY = REPO_ROOT / "run.py"
# Starting Python, importing aiohttp and opening SQLite takes ~1 s; a slow CI box gets ten.
STARTUP_DEADLINE_SECONDS = 10.0
# The server's shutdown_timeout is 10 s; a clean SIGTERM must finish well inside that plus a margin.
EXIT_DEADLINE_SECONDS = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any DIAGNOXIX_* setting of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIAGNOXIX_")}
    env["DIAGNOXIX_LOG_JSON"] = "1"
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    db: Path
    stdout_path: Path
    stderr_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws/notifications"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    async def wait_exit(self, timeout: float = EXIT_DEADLINE_SECONDS) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"server pid {self.proc.pid} still running after {timeout} s\n{self.stderr()}")
            await asyncio.sleep(0.05)
        return code

    async def terminate(self) -> int:
        """SIGTERM, as systemd or `docker stop` sends it; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit()

    async def crash(self) -> int:
        """kill -9: no shutdown code runs at all."""
        self.proc.kill()
        return await self.wait_exit()


class Launcher:
    """Starts servers for one test and, at teardown, kills whichever it started that still run."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    async def start(
        self,
        db: Path,
        *,
        dev: bool = False,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Server:
        port = port or free_port()
        if argv is None:
            argv = ["--host", "127.0.0.1", "--port", str(port), "--db", str(db)]
            if dev:
                argv.append("--dev")
        n = len(self.servers)
        stdout_path = self.tmp_path / f"server{n}.stdout"
        stderr_path = self.tmp_path / f"server{n}.stderr"
        out = stdout_path.open("wb")
        err = stderr_path.open("wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, str(RUN_PY), *argv],
                cwd=REPO_ROOT,
                env=env if env is not None else child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        except BaseException:
            out.close()
            err.close()
            raise
        server = Server(proc, port, db, stdout_path, stderr_path, [out, err])
        self.servers.append(server)
        await self._wait_healthy(server)
        return server

    async def _wait_healthy(self, server: Server) -> None:
        """Poll GET /healthz until 200; fail with the server's log if it dies or never answers."""
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if server.proc.poll() is not None:
                    pytest.fail(f"server exited with {server.proc.returncode}:\n{server.stderr()}")
                try:
                    async with session.get(f"{server.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server not healthy after {STARTUP_DEADLINE_SECONDS} s:\n{server.stderr()}")
                await asyncio.sleep(0.05)

    def cleanup(self) -> None:
        for server in self.servers:
            if server.proc.poll() is None:
                server.proc.kill()
            try:
                server.proc.wait(timeout=10)
            finally:
                for f in server.files:
                    f.close()


CLI_TIMEOUT_SECONDS = 30.0
API_KEY_PATTERN = re.compile(r"^dxn_([0-9A-Za-z]+)_([A-Za-z0-9_-]+)$")


def last_line(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    assert lines, "the command printed nothing"
    return lines[-1]


async def run_cli(
    *args: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python run.py ARGS` to completion (off the event loop), with its output captured;
    `preexec_fn` runs in the child before it starts (e.g. to set a resource limit)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(RUN_PY), *args],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
        preexec_fn=preexec_fn,
    )


async def create_api_key(db: Path, name: str = "appointments-service") -> tuple[str, str]:
    """`run.py apikey create` as an operator would; returns (key id, full key)."""
    done = await run_cli("apikey", "create", name, "--db", str(db))
    assert done.returncode == 0, done.stderr
    key = last_line(done.stdout)
    match = API_KEY_PATTERN.fullmatch(key)
    assert match, f"last line is not a key alone: {key!r}"
    return match.group(1), key
