"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a data directory in
/tmp, loopback only, no durability settings (nothing here must survive the machine, only a
process; a test that crashes PostgreSQL itself asks for a `durable` cluster of its own).
Started once per test session, each test gets a database of its own.

PostgreSQL refuses to run as root: as root (as on CI) the cluster runs as the `postgres` user the
Debian package creates. Skipped where PostgreSQL is not installed (`apt-get install postgresql`),
unless DIAGNOXIX_REQUIRE_SERVERS is set (CI sets it: there a missing server is a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from diagnoxix.clock import Clock
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.postgres.migrations import migrate

START_TIMEOUT = 30.0
# Every test database is a copy of this one, migrated once per session.
TEMPLATE = "diagnoxix_template"


def server_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps it out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("DIAGNOXIX_REQUIRE_SERVERS"):
        pytest.fail(f"{reason} (DIAGNOXIX_REQUIRE_SERVERS is set)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One postmaster on 127.0.0.1:`port`, its data under `root`; `stop()` ends it by its PID."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self._bin = bindir
        # As in production: a commit is on disk when it returns, so a crash loses nothing
        # committed. Off by default: the other tests never crash it, and run faster without.
        self._durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="diagnoxix-pg-"))
        self.port = free_port()
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data = self.root / "data"
        subprocess.run(
            [str(self._bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "-N"],
            check=True,
            capture_output=True,
            **self._user,
        )
        self.restart()

    def restart(self) -> None:
        """Start the postmaster on the existing data directory (after `crash`: with recovery)."""
        data = self.root / "data"
        log = os.open(self.root / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._proc = subprocess.Popen(
            [
                str(self._bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.root}",
                *([] if self._durable else ["-c", "fsync=off", "-c", "synchronous_commit=off"]),
                *([] if self._durable else ["-c", "full_page_writes=off"]),
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=64MB",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            **self._user,
        )
        os.close(log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            if self._psql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start in time")

    def _psql(self, sql: str, *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["psql", "-Xq", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", sql],
            check=check,
            capture_output=True,
        )

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new database, already migrated: a copy of the template made at start (copying one
        takes a fraction of what migrating a new one does)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def create_empty_database(self, name: str) -> None:
        """A database the service migrates itself, on start."""
        self._psql(f"CREATE DATABASE {name}")

    def make_template(self) -> None:
        """The template every test database is copied from: migrated, then left alone."""
        self._psql(f"CREATE DATABASE {TEMPLATE}")

        async def migrated() -> None:
            conn = await asyncpg.connect(self.dsn(TEMPLATE))
            try:
                await migrate(conn)
            finally:
                await conn.close()

        # Its own thread and loop: this may be called from a fixture of a running event loop.
        failed: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(migrated())
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if failed:
            raise failed[0]

    def drop_database(self, name: str) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)

    def crash(self) -> None:
        """End the postmaster as a crash would (immediate shutdown: no checkpoint, every session
        cut, recovery on the next start); the data directory stays for `restart`."""
        proc = self._proc
        assert proc is not None
        assert proc.poll() is None
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=20)

    def _processes(self) -> list[int]:
        """The postmaster and its children (the sessions, the background workers)."""
        assert self._proc is not None
        pid = self._proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [pid, *map(int, children)]

    def freeze(self) -> None:
        """PostgreSQL stops answering without closing anything (SIGSTOP), as behind a network
        that drops every packet: connections open, sessions and new connections hang."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = server_bin()
    if bindir is None or shutil.which("psql") is None:
        skip_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
        raise AssertionError("unreachable")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        cluster.make_template()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database for one test; its DSN."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.dsn(name)
    finally:
        pg_cluster.drop_database(name)


@contextlib.asynccontextmanager
async def two_pg_stores(dsn: str, clock: Clock | None = None) -> AsyncIterator[tuple[PgStore, PgStore]]:
    """Two processes' stores on one database, opened in order and closed in reverse; with one
    `clock`, the machines agree on the time."""
    first = PgStore(dsn) if clock is None else PgStore(dsn, clock=clock)
    await first.open()
    try:
        second = PgStore(dsn) if clock is None else PgStore(dsn, clock=clock)
        await second.open()
        try:
            yield first, second
        finally:
            await second.close()
    finally:
        await first.close()
