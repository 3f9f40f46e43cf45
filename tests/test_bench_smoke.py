"""The benchmark's machinery works end to end against the real server (`make bench` will not rot).

Not a timed test: it only checks that a tiny run delivers every frame, resumes every client after a
server restart with nothing lost or duplicated, and reports the rows it promises. ~5 seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_delivers_everything_and_resumes_after_restart(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    argv = [sys.executable, "-m", "bench", "--smoke", "--only", "targeted", "storm"]
    argv += ["--systems", "ours-http", "--clients", "1", "--max-minutes", "1", "--json", str(out)]
    run = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stdout + run.stderr

    rows = {row["scenario"].split(",")[0]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"2. targeted", "5. reconnect storm"}
    burst = rows["2. targeted"]
    assert burst["system"] == "ours-http"
    assert len(burst["samples"]) == 1
    assert burst["samples"][0] > 0
    storm = rows["5. reconnect storm"]
    assert storm["samples"], storm["note"]
    assert "lost 0, duplicated 0" in storm["note"]
    assert "| 5. reconnect storm, 200 clients: all resumed | ours |" in run.stdout
