"""Results and the one table a run prints: median, spread, ratio to the ceiling, CPU, target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Row:
    scenario: str
    system: str
    unit: str
    samples: list[float]
    # "ratio" compares with the ceiling's median of the same scenario: this row's median / ceiling's.
    ratio: float | None = None
    # Per run: the busiest load-client process (fraction of one core) and all of them together.
    client_max: list[float] = field(default_factory=list)
    client_total: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    # Cores used by processes that are not ours during each run (someone else's tests): noise.
    others_cpu: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


def _num(value: float) -> str:
    if value != value:  # NaN
        return "—"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cpu(row: Row) -> str:
    if not row.client_max:
        return "—"
    busiest = max(row.client_max) * 100
    total = statistics.median(row.client_total)
    return f"{busiest:.0f}% max, Σ{total:.2f}"


def _server_cpu(row: Row) -> str:
    return f"{statistics.median(row.server_cpu) * 100:.0f}%" if row.server_cpu else "—"


def _others_cpu(row: Row) -> str:
    # Weighted by duration: /proc/stat counts in 10 ms ticks, so one short burst alone says little.
    if not row.others_cpu or not sum(row.walls):
        return "—"
    return f"{sum(o * w for o, w in zip(row.others_cpu, row.walls, strict=True)) / sum(row.walls):.2f}"


HEADERS = (
    "scenario",
    "system",
    "median",
    "spread (min–max, n)",
    "÷ ceiling",
    "load clients CPU",
    "server CPU",
    "other load",
    "target",
    "met",
    "notes",
)


def cells(row: Row) -> list[str]:
    spread = (
        f"{_num(min(row.samples))}–{_num(max(row.samples))}, n={len(row.samples)}" if row.samples else "—"
    )
    return [
        row.scenario,
        row.system,
        f"{_num(row.median)} {row.unit}",
        spread,
        f"{row.ratio:.2f}x" if row.ratio is not None else "—",
        _cpu(row),
        _server_cpu(row),
        _others_cpu(row),
        row.target or "—",
        {True: "yes", False: "NO", None: "—"}[row.met],
        row.note,
    ]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines)
