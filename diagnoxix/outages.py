"""One warning when a service the process depends on goes away, one info when it is back.

A dependency that is down fails every call made to it; logging each failure would flood the log
at the moment an operator reads it. An `Outage` logs the first failure of a streak and the
recovery, with how long it lasted, and nothing in between. Only the error's type is logged: a
driver's message may name more than an operator needs (never a password, but why risk it).
"""

from __future__ import annotations

import logging
import time
from typing import Any


class Outage:
    def __init__(self, log: logging.Logger, event: str, fields: dict[str, Any] | None = None) -> None:
        # `event.down` and `event.up` are logged, with `fields` (e.g. where the service is).
        self._log = log
        self._event = event
        self._fields = fields or {}
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, error: BaseException | None = None, *, what: str | None = None) -> None:
        """A call failed: the first failure of a streak is logged as a warning."""
        if self.down_since is not None:
            return
        self.down_since = time.time()
        extra = dict(self._fields)
        if error is not None:
            extra["error"] = type(error).__name__
        if what is not None:
            extra["what"] = what
        self._log.warning(f"{self._event}.down", extra=extra)

    def recovered(self) -> None:
        """A call succeeded: the end of a streak of failures is logged once."""
        since = self.down_since
        if since is None:
            return
        self.down_since = None
        extra = dict(self._fields) | {"down_seconds": round(time.time() - since, 1)}
        self._log.info(f"{self._event}.up", extra=extra)
