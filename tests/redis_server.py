"""A throwaway `redis-server` for one test: a free loopback port, its own directory, nothing
persisted, stopped by its PID (the `redis_server` fixture in conftest). It can be killed and
started again on the same port, as a restarted Redis would be.

Debian's `redis-server` package provides the binary (`scripts/system-deps.sh` installs it, with
its system service left stopped). Where it is missing the tests are skipped, except as root or
on CI, where `make test` should have installed it: there they fail and say so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import free_port

REDIS_SERVER = Path("/usr/bin/redis-server")
STARTUP_DEADLINE_SECONDS = 10.0
EXIT_DEADLINE_SECONDS = 10.0


def require_redis_server() -> None:
    """Skip (or, as root or on CI, fail) when Debian's redis-server is not installed."""
    if REDIS_SERVER.exists():
        return
    missing = "redis-server is not installed (apt-get install redis-server, or make system-deps)"
    if os.geteuid() == 0 or os.environ.get("CI"):
        pytest.fail(missing)
    pytest.skip(missing)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only redis-server: its certificate and key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    def __init__(self, directory: Path, *, password: str | None = None, tls: TlsFiles | None = None) -> None:
        """`tls`: serve TLS only on the port (no plain-text port); clients need not present a
        certificate."""
        self.directory = directory
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """`redis://`, or with TLS `rediss://` trusting the server's CA (redis-py's `ssl_ca_certs`)."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        """Start on `port` (again, after a kill) and return once it answers."""
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            ports += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            ports += ["--tls-ca-cert-file", str(self.tls.ca)]
        argv = [
            str(REDIS_SERVER),
            *ports,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            "--daemonize",
            "no",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while not await self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")
                self.stop_now()
                pytest.fail(f"redis-server did not start on port {self.port}:\n{log}")
            await asyncio.sleep(0.02)

    async def _answers(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=context)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            # +PONG, or -NOAUTH with a password: either way it is serving.
            return (await asyncio.wait_for(reader.readline(), 1.0))[:1] in (b"+", b"-")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def kill(self) -> None:
        """kill -9: Redis is gone at once, with everything it held."""
        assert self.proc is not None
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait, EXIT_DEADLINE_SECONDS)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop_now(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(EXIT_DEADLINE_SECONDS)
