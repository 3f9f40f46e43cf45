"""`python -m bench [--quick] [--only SCENARIO ...]`: the performance benchmark of issue 5.

Starts the real server (`run.py`; `bench/our_server.py` only for the in-process service API),
the two baselines (`bench/ceiling_server.py`, `bench/peer_server.py`) and separate load-client
processes, all on 127.0.0.1; runs each scenario a few times; prints one table. Every process it
starts is stopped by PID before it exits, and a watchdog bounds the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import aiohttp

from bench.common import FD_MARGIN, raise_nofile
from bench.procs import BenchError, Workers
from bench.report import cells, markdown_table
from bench.scenarios import FULL, QUICK, SMOKE, Bench

SCENARIOS = ("memory", "targeted", "steady", "storm", "scaled")
MEMORY_SYSTEMS = ["ceiling", "ceiling-deflate", "peer", "ours"]
TARGETED_SYSTEMS = ["ceiling", "peer", "ours-service", "ours-typed", "ours-http"]
STEADY_SYSTEMS = ["ceiling", "peer", "ours"]


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model}), shared by servers and load clients; "
        f"Python {platform.python_version()}, aiohttp {version('aiohttp')}, "
        f"python-socketio {version('python-socketio')}, aiosqlite {version('aiosqlite')}, "
        f"SQLite {sqlite3.sqlite_version}; load average at start {load}"
    )


async def run(args: argparse.Namespace, tmp: Path) -> Bench:
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.connections and args.connections > max(sizes.memory_counts):
        # Opt-in: one more step of the memory ramp; the broadcast then goes to that many.
        sizes = replace(sizes, memory_counts=(*sizes.memory_counts, args.connections))

    def chosen(systems: list[str]) -> list[str]:
        return [s for s in systems if not args.systems or s in args.systems]

    workers = Workers(args.clients)
    bench: Bench | None = None
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            bench = Bench(sizes, workers, tmp, http)
            bench.profile_dir = args.profile
            try:
                async with asyncio.timeout(args.max_minutes * 60):
                    for scenario in args.only:
                        print(f"[{time.strftime('%H:%M:%S')}] {scenario}", flush=True)
                        if scenario == "memory":
                            await bench.memory_and_broadcast(chosen(MEMORY_SYSTEMS))
                        elif scenario == "targeted":
                            await bench.targeted(chosen(TARGETED_SYSTEMS))
                        elif scenario == "steady":
                            await bench.steady(chosen(STEADY_SYSTEMS))
                        elif scenario == "storm":
                            await bench.storm()
                        elif scenario == "scaled":
                            from bench.scaled import run_scaled

                            await run_scaled(
                                bench, "smoke" if args.smoke else "quick" if args.quick else "full"
                            )
            finally:
                await bench.stop_all()
    finally:
        if bench is not None:
            for server in bench.servers:
                server.kill_now()
        workers.stop()
    return bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: about a minute or two")
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="scenarios to run"
    )
    parser.add_argument(
        "--clients", type=int, default=2, help="load-client processes holding sockets (default 2)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, for the smoke test")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=sorted({*MEMORY_SYSTEMS, *TARGETED_SYSTEMS, *STEADY_SYSTEMS}),
        help="only these servers (default: all; the storm is ours alone)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        help="memory and broadcast: also measure at this many connections (at most the descriptor"
        f" limit less {FD_MARGIN}: 19,900 where it is 20,000); longer, so not in the default run",
    )
    parser.add_argument("--max-minutes", type=float, default=None, help="stop the run after this long")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--profile", type=Path, help="sample our server with py-spy in every timed window, into this dir"
    )
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, databases)")
    args = parser.parse_args(argv)
    if args.max_minutes is None:
        args.max_minutes = (5.0 if args.quick else 20.0) * (3 if args.connections else 1)
    limit = raise_nofile()
    if args.connections is not None and not 0 < args.connections <= limit - FD_MARGIN:
        parser.error(
            f"--connections must be between 1 and {limit - FD_MARGIN}: each server holds every socket"
            f" and this process's descriptor limit (RLIMIT_NOFILE, inherited) is {limit}"
        )
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    header = machine()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(f"Diagnoxix Notify benchmark ({mode}): {header}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="diagnoxix-bench-"))
    started = time.monotonic()
    try:
        bench = asyncio.run(run(args, tmp))
    except (BenchError, TimeoutError) as exc:
        print(f"benchmark failed: {exc or 'time limit reached'} (logs in {tmp})", file=sys.stderr)
        return 1
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    print()
    print(markdown_table(bench.rows))
    print(f"\n{len(bench.rows)} rows in {elapsed:.0f} s. {header}")
    if args.keep:
        print(f"server logs and databases kept in {tmp}")
    if args.json:
        rows = [asdict(row) | {"cells": cells(row)} for row in bench.rows]
        args.json.write_text(json.dumps({"machine": header, "seconds": elapsed, "rows": rows}, indent=1))
    missed = [f"{row.scenario} ({row.system})" for row in bench.rows if row.met is False]
    if missed:
        print("targets missed: " + "; ".join(missed) + " (see docs/performance.md)")
    return 2 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
