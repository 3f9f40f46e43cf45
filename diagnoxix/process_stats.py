"""The process's own figures that the standard library does not give directly."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_STATM = Path("/proc/self/statm")


def current_rss_bytes() -> int | None:
    """Resident memory now (Linux: /proc/self/statm); None where the system does not say."""
    try:
        resident_pages = int(_STATM.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The most resident memory the process has had (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
