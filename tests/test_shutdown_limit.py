"""A shutdown that never finishes: the serving process names what it waits for and ends itself.

The process is real (`edge.server.serve`, signals, logging as the command line sets it up); the
app is the smallest that can hang its own cleanup, as a push service that never answers or a lost
database might. The test ends only the process it started, by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diagnoxix.edge.server import STUCK_EXIT_CODE

from .processes import free_port

ROOT = Path(__file__).resolve().parent.parent
LIMIT_SECONDS = 1.0

# Serves an app whose cleanup waits forever, with a one-second limit on the whole shutdown.
SCRIPT = f"""
import asyncio, sys
from aiohttp import web
from diagnoxix.edge.clients import Forwarding
from diagnoxix.edge.server import ConnectionGuard, serve
from diagnoxix.logs import configure_logging

async def never_finishes(app):
    await asyncio.Event().wait()

async def ping(request):
    return web.json_response({{"ok": True}})

configure_logging("INFO", as_json=True)
app = web.Application()
app.router.add_get("/ping", ping)
app.on_cleanup.append(never_finishes)
serve(app, host="127.0.0.1", port=int(sys.argv[1]), on_ready=lambda: print("ready", flush=True),
      shutdown_limit={LIMIT_SECONDS}, guard=ConnectionGuard(Forwarding(()), 100))
"""


def test_a_shutdown_stuck_past_its_limit_names_what_it_waits_for_and_exits() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, err = proc.communicate(timeout=LIMIT_SECONDS + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == STUCK_EXIT_CODE, err
    assert time.monotonic() - signalled < LIMIT_SECONDS + 10
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (stuck,) = [e for e in events if e["event"] == "server.shutdown_stuck"]
    assert stuck["level"] == "error"
    assert stuck["seconds"] == LIMIT_SECONDS
    # The cleanup's task, down to the step that never finishes, and where that step waits.
    assert any("never_finishes > Event.wait" in task and "(<string>:" in task for task in stuck["waiting"]), (
        stuck
    )
    assert "Traceback" not in err
    assert not any(e["event"] == "server.stop" for e in events)
