"""Throwaway PostgreSQL and Redis servers for the scaled-out scenario, on loopback only.

A small copy of what `tests/pg_server.py` and `tests/redis_server.py` do (those are pytest
helpers: they fail tests and skip, and the benchmark must not import pytest). Differences that
matter for a measurement: PostgreSQL keeps its durable defaults (`fsync` and
`synchronous_commit` on, as SQLite's `synchronous=FULL` on the other side of the comparison), and
both servers report their PIDs so that their CPU can be counted.

Each server is started by this module, remembered by its PID and stopped by it (PostgreSQL: SIGINT,
its fast shutdown; Redis: SIGTERM), SIGKILL after a grace period. As root (as on CI) PostgreSQL
runs as the `postgres` user the Debian package creates, since it refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port

START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 20.0
REDIS_SERVER = Path("/usr/bin/redis-server")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BackingError(RuntimeError):
    """PostgreSQL or Redis is missing or would not start."""


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps it out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found or shutil.which("psql") is None:
        raise BackingError("PostgreSQL is not installed (apt-get install postgresql)")
    return found[-1].parent


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (PostgreSQL's backends and helpers)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4, ppid
            found.append(int(entry.name))
    return found


def _is_backend(pid: int) -> bool:
    """A client connection's backend: its title is `postgres: USER DB HOST(PORT) STATE`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"127.0.0.1(" in cmdline.read()
    except OSError:
        return False


def reaped_cpu_seconds(pid: int) -> float:
    """CPU time of `pid`'s children that have exited and been waited for (cutime + cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / _CLOCK_TICKS


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Postgres:
    """One postmaster on 127.0.0.1:`port`, its data in a temp dir of its own; `stop()` by PID."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="diagnoxix-bench-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self, *, backends: bool) -> list[int]:
        """The backends serving clients' connections, or the rest: the postmaster and its helpers
        (checkpointer, WAL writer, background writer, autovacuum, ...)."""
        found = [p for p in children(self.pid) if _is_backend(p) == backends]
        return found if backends else [self.pid, *found]

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data = self.root / "data"
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "-N"],
            check=True,
            capture_output=True,
            **self._user,
        )
        log = os.open(self.root / "server.log", os.O_WRONLY | os.O_CREAT, 0o600)
        settings = [
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.root}",
            "max_connections=100",
            "shared_buffers=128MB",
        ]
        argv = [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port)]
        for setting in settings:
            argv += ["-c", setting]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, **self._user)
        os.close(log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackingError(f"postgres exited: {self.log_tail()}")
            if self.psql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise BackingError("postgres did not start in time")

    def psql(self, sql: str, *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        argv = ["psql", "-Xq", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", sql]
        return subprocess.run(argv, check=check, capture_output=True, timeout=30)

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # SIGINT: fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """One `redis-server` on 127.0.0.1:`port`, nothing persisted; `stop()` by PID."""

    def __init__(self, directory: Path) -> None:
        if not REDIS_SERVER.exists():
            raise BackingError("redis-server is not installed (apt-get install redis-server)")
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no"]
        argv += ["--logfile", str(self.directory / "redis.log")]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._answers():
                return
            time.sleep(0.05)
        raise BackingError(f"redis-server did not start on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)
