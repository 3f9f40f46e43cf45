"""Interpreter settings for a serving process, applied by its entry point: the garbage collector
and how long a thread may keep the GIL.

A burst keeps tens of thousands of notifications, frames and rows alive at once. With CPython's
default thresholds (700, 10, 10) they are promoted generation by generation and set off full
collections that walk every object of every open connection. Collecting the youngest generation
every 20,000 allocations instead of 700 lets a burst's objects die young, freed by reference
counting before any collection sees them.

What exists once the server has started (modules, routes, the app itself) is frozen: it lives as
long as the process, and no full collection needs to walk it again.

The store's writer thread runs SQLite with the GIL released, but needs it back between statements
and to start each one. While the event loop runs Python (staging the next rows, fanning out), a
waiting thread gets it only after the switch interval, 5 ms by default, and each insert of a burst
waits that long several times over; 0.5 ms hands it back at once (docs/performance.md).

Not in `create_app`: both are the process's, and tests build many apps in one process.
"""

from __future__ import annotations

import gc
import sys

from aiohttp import web

THRESHOLDS = (20_000, 10, 10)
SWITCH_INTERVAL_SECONDS = 0.0005


def tune_for_serving(app: web.Application) -> None:
    gc.set_threshold(*THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    app.on_startup.append(_freeze_startup_objects)


async def _freeze_startup_objects(_app: web.Application) -> None:
    gc.collect()
    gc.freeze()
