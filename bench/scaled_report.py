"""What the scaled-out scenario (`bench/scaled.py`) measured, as rows of the run's table and as
the ratio table it prints: the scaled system against one process on SQLite."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.report import Row

# CPU per delivered notification, two processes on PostgreSQL and Redis against one on SQLite.
TARGET_CPU_RATIO = 2.0


@dataclass
class Results:
    """One system's samples; `*_parts`: the same CPU per process group (ours A, postgres, ...)."""

    burst_rate: list[float] = field(default_factory=list)
    burst_cpu_us: list[float] = field(default_factory=list)
    burst_parts: dict[str, list[float]] = field(default_factory=dict)
    request_cpu_us: list[float] = field(default_factory=list)
    request_parts: dict[str, list[float]] = field(default_factory=dict)
    # The same less what the processes use idle (S0) in as long: what a request adds.
    request_net_us: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    http_p99: list[float] = field(default_factory=list)
    errors: int = 0
    # S0: cores the server-side processes use with the clients connected and nothing sent.
    idle_cores: float = float("nan")
    idle_parts: dict[str, float] = field(default_factory=dict)
    # Per step ("S1", "S2"): the server-side processes' and everyone else's CPU, in cores, per run.
    server_cores: dict[str, list[float]] = field(default_factory=dict)
    other_cores: dict[str, list[float]] = field(default_factory=dict)


Pick = Callable[[Results], list[float]]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _parts(parts: dict[str, list[float]]) -> str:
    return ", ".join(f"{name} {median(v):.1f}" for name, v in parts.items())


def rows(s0: str, s1: str, s2: str, results: dict[str, Results]) -> list[Row]:
    """Rows for the run's table; "÷ ceiling" as elsewhere, the ratio to SQLite in the notes."""
    specs: list[tuple[str, str, Pick, str]] = [
        (f"{s1}: throughput", "notif/s", lambda r: r.burst_rate, "S1"),
        (f"{s1}: server CPU per notification", "µs", lambda r: r.burst_cpu_us, "S1"),
        (f"{s2}: server CPU per request", "µs", lambda r: r.request_cpu_us, "S2"),
        (f"{s2}: p50", "ms", lambda r: r.p50, "S2"),
        (f"{s2}: p99", "ms", lambda r: r.p99, "S2"),
    ]
    ceiling, sqlite = results.get("ceiling"), results.get("ours")
    out = []
    for system, result in results.items():
        row = Row(f"{s0}: server CPU", system, "% core", [result.idle_cores * 100])
        if len(result.idle_parts) > 1:
            row.note = ", ".join(f"{name} {cores * 100:.1f}" for name, cores in result.idle_parts.items())
        out.append(row)
    for title, unit, pick, step in specs:
        for system, result in results.items():
            row = Row(title, system, unit, list(pick(result)))
            row.server_cpu = result.server_cores.get(step, [])
            row.others_cpu = result.other_cores.get(step, [])
            row.walls = [1.0] * len(row.others_cpu)
            if ceiling is not None and pick(ceiling) and row.samples and median(pick(ceiling)) > 0:
                row.ratio = row.median / median(pick(ceiling))
            notes = []
            if system == "ours-scaled" and sqlite is not None and pick(sqlite) and median(pick(sqlite)) > 0:
                vs = row.median / median(pick(sqlite))
                notes.append(f"{vs:.2f}x SQLite")
                if title.endswith("per notification"):
                    row.target = f"≤ {TARGET_CPU_RATIO:.0f}x SQLite's"
                    row.met = vs <= TARGET_CPU_RATIO
            parts = result.burst_parts if step == "S1" else result.request_parts
            if "CPU" in title and len(parts) > 1:
                notes.append(_parts(parts))
            if title.endswith("p99"):
                notes.append(f"HTTP 201 p99 {median(result.http_p99):.1f} ms; {result.errors} errors")
            row.note = "; ".join(notes)
            out.append(row)
    return out


def ratio_table(results: dict[str, Results]) -> str:
    """Markdown: SQLite, scaled, their ratio; then where the scaled system's CPU goes."""
    sqlite, scaled = results.get("ours"), results.get("ours-scaled")
    if sqlite is None or scaled is None:
        return ""
    lines = [
        "| measure | ours (SQLite, 1 process) | ours-scaled (2 processes) | scaled ÷ SQLite | target |",
        "|---|---|---|---|---|",
    ]
    measures: list[tuple[str, Pick, bool]] = [
        ("S0 idle, clients connected: server CPU (% of a core)", lambda r: [r.idle_cores * 100], False),
        ("S1 throughput (notif/s)", lambda r: r.burst_rate, False),
        ("S1 server CPU per delivered notification (µs)", lambda r: r.burst_cpu_us, True),
        ("S2 server CPU per request (µs)", lambda r: r.request_cpu_us, False),
        ("S2 the same less idle CPU (µs)", lambda r: r.request_net_us, False),
        ("S2 p50 send → frame (ms)", lambda r: r.p50, False),
        ("S2 p99 send → frame (ms)", lambda r: r.p99, False),
    ]
    for label, pick, target in measures:
        a, b = median(pick(sqlite)), median(pick(scaled))
        ratio = b / a if a > 0 else float("nan")  # NaN compares False: no ratio, target missed
        verdict = "—"
        if target:
            verdict = f"≤ {TARGET_CPU_RATIO:.0f}x: " + ("met" if ratio <= TARGET_CPU_RATIO else "MISSED")
        lines.append(f"| {label} | {a:,.1f} | {b:,.1f} | {ratio:.2f}x | {verdict} |")
    lines.append("")
    lines.append(
        f"ours-scaled, server CPU by process, S1 (µs per notification): {_parts(scaled.burst_parts)}"
    )
    lines.append(f"ours-scaled, server CPU by process, S2 (µs per request): {_parts(scaled.request_parts)}")
    lines.append(f"ours (SQLite), S2 (µs per request): {_parts(sqlite.request_parts)}")
    return "\n".join(lines)
