"""Several server processes on one port (`--workers N`): each a full server, the kernel spreading
new connections among them (SO_REUSEPORT). They share the PostgreSQL store and the Redis broker, so
a client may connect to any of them; none holds anything the others need.

This process only supervises: it starts the workers (the same command line, marked as workers),
passes SIGINT/SIGTERM on to them and waits for them to stop, and starts again a worker that died
(its clients reconnect to the others and resume meanwhile), waiting longer each time one dies
soon after starting.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("diagnoxix.lifecycle")

# Set in a worker's environment: serve on a shared port, never start workers of its own.
WORKER_ENV = "DIAGNOXIX_WORKER"
# A worker that ran less than this before dying counts as failing to start: wait before the next.
STEADY_SECONDS = 10.0
MAX_RESTART_DELAY = 30.0
# How long stopping workers may take before they are killed (their own grace is shorter).
STOP_TIMEOUT = 60.0


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


class Supervisor:
    """Starts `count` workers running `argv` and keeps them running until told to stop."""

    def __init__(self, count: int, argv: Sequence[str]) -> None:
        self._count = count
        self._argv = [sys.executable, *argv]
        self._workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self._delays: dict[int, float] = {}
        # Slots whose worker died, and when to start it again: the loop goes on watching the
        # others and the stop signals meanwhile.
        self._restart_at: dict[int, float] = {}
        self._stopping: str | None = None

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        for slot in range(self._count):
            self._start(slot)
        log.info("workers.start", extra={"workers": self._count})
        while self._stopping is None:
            time.sleep(0.2)
            now = time.monotonic()
            for slot, (proc, started) in list(self._workers.items()):
                code = proc.poll()
                if code is None or self._stopping is not None:
                    continue
                delay = self._restart_delay(slot, now - started)
                log.warning(
                    "workers.died", extra={"worker": slot, "pid": proc.pid, "code": code, "restart_in": delay}
                )
                del self._workers[slot]
                self._restart_at[slot] = now + delay
            for slot, due in list(self._restart_at.items()):
                if due <= now and self._stopping is None:
                    del self._restart_at[slot]
                    self._start(slot)
        return self._stop_all()

    def _restart_delay(self, slot: int, ran: float) -> float:
        """At once after a steady run; after a quick death, twice the last wait (1 s to 30 s)."""
        delay = 0.0
        if ran < STEADY_SECONDS:
            delay = min(MAX_RESTART_DELAY, max(1.0, 2 * self._delays.get(slot, 0.5)))
        self._delays[slot] = delay
        return delay

    def _start(self, slot: int) -> None:
        env = dict(os.environ) | {WORKER_ENV: "1"}
        proc = subprocess.Popen(self._argv, env=env)  # noqa: S603 - our own command line
        self._workers[slot] = (proc, time.monotonic())

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = signal.Signals(signum).name

    def _stop_all(self) -> int:
        log.info("workers.stopping", extra={"signal": self._stopping})
        for proc, _started in self._workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        worst = 0
        for proc, _started in self._workers.values():
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            worst = max(worst, abs(code))
        log.info("workers.stop", extra={"workers": self._count})
        return 0 if worst in (0, signal.SIGTERM) else 1
