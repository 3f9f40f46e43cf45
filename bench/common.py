"""What every benchmark process shares: the message, process accounting, file-descriptor limits.

Kept free of aiohttp, socketio and the package so that any process (orchestrator, load client,
baseline server) can import it cheaply.
"""

from __future__ import annotations

import os
import resource
import socket
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Descriptors a server keeps besides its sockets (database files, the listening socket, pipes):
# what a process's descriptor limit leaves for connections is the limit less this.
FD_MARGIN = 100

# The seed guide's message shape, sized like a real lab-result notification (~300 bytes on the wire).
NOTE_TYPE = "lab_result_ready"
NOTE_TITLE = "Lab Result Ready"
NOTE_MESSAGE = "Your Complete Blood Count result is ready to view. Sign in to the patient portal to see it."


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (20,000 here; 2**20 if unlimited); returns it.

    Servers and load clients started by the benchmark inherit it, so each may hold that many
    sockets less `FD_MARGIN`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 2**20 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def user_id(index: int) -> str:
    return f"u{index:05d}"


def note_data(index: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "lab_result",
        "test_name": "Complete Blood Count",
        "order_id": f"ord-{index:07d}",
        **extra,
    }


def seed_note(index: int, user: str, **extra: Any) -> dict[str, Any]:
    """A full notification in the seed's format, as the baselines send it pre-built."""
    return {
        "type": NOTE_TYPE,
        "user_id": user,
        "title": NOTE_TITLE,
        "message": NOTE_MESSAGE,
        "data": note_data(index, **extra),
        "timestamp": "2026-01-15T10:30:00.000Z",
        "id": str(uuid.UUID(int=index + 1)),
    }


def burst_plan(users: int, count: int) -> list[tuple[int, str]]:
    """Notification i goes to user i % users: a burst spread evenly, each to its own user."""
    return [(i, user_id(i % users)) for i in range(count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, in seconds.

    Read through the process's CPU-time clock (Linux: clockid `(~pid << 3) | 2`, what
    clock_getcpuclockid(3) returns), which counts nanoseconds: a burst lasts a few hundred
    milliseconds, too short for /proc's 10 ms ticks, the fallback.
    """
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command name start at state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine have used so far (from /proc/stat), in seconds.

    Minus what our own processes used in the same window, it shows how much someone else's work
    (other people's test runs on this shared machine) may have disturbed a measurement.
    """
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS
