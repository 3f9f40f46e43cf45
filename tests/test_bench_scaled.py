"""The scaled-out benchmark scenario works end to end (`python -m bench --only scaled`).

Not a timed test: a tiny run (`--smoke`, no ceiling) must deliver every frame through one process
on SQLite and through two on a throwaway PostgreSQL and Redis, count the CPU of every server-side
process (ours, PostgreSQL's backends, redis-server), and stop PostgreSQL and Redis by their PIDs.
About 25 seconds, most of it starting Python processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .pg_server import server_bin, skip_or_fail
from .redis_server import require_redis_server

REPO_ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_scaled_smoke_run_counts_every_server_process_and_stops_them(tmp_path: Path) -> None:
    if server_bin() is None:
        skip_or_fail("PostgreSQL is not installed (apt-get install postgresql)")
    require_redis_server()
    out = tmp_path / "rows.json"
    argv = [sys.executable, "-m", "bench", "--smoke", "--only", "scaled", "--clients", "1"]
    argv += ["--max-minutes", "1.5", "--json", str(out)]
    run = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

    rows = json.loads(out.read_text())["rows"]
    by_key = {(row["scenario"].split(":")[-1].strip(), row["system"]): row for row in rows}
    for system in ("ours", "ours-scaled"):
        for measure in ("throughput", "server CPU per notification", "server CPU per request", "p99"):
            row = by_key[measure, system]
            assert len(row["samples"]) == 1, row
            assert row["samples"][0] > 0, row
    assert "0 errors" in by_key["p99", "ours-scaled"]["note"]
    # The scaled system's CPU is the sum of every server-side process, and each one did work.
    parts = re.search(r"ours-scaled, server CPU by process, S1 \(µs per notification\): (.*)", run.stdout)
    assert parts is not None, run.stdout
    used = {name: float(value) for name, value in re.findall(r"([a-zA-Z ]+?) ([\d.]+)(?:, |$)", parts[1])}
    assert set(used) == {"ours A", "ours B", "pg backends", "pg others", "redis"}, used
    for name in ("ours A", "ours B", "pg backends", "redis"):
        assert used[name] > 0, used
    row = by_key["server CPU per notification", "ours-scaled"]
    assert abs(sum(used.values()) - row["samples"][0]) < 0.01 * row["samples"][0] + 0.5, (used, row)

    # PostgreSQL and Redis were stopped by their PIDs before the run ended.
    pids = re.search(r"PostgreSQL PID (\d+) on port \d+, Redis PID (\d+)", run.stdout)
    assert pids is not None, run.stdout
    assert not _alive(int(pids[1]))
    assert not _alive(int(pids[2]))
