"""The records of durable timers (`protocols.TimerStore`): a job to add, and a job as stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The idempotency records' namespace for jobs' claims (`protocols.timer_claim`): never an API
# key's id (those are 12 hex digits).
TIMER_CLAIMS = "timer"
TIMER_STATES = ("pending", "done", "cancelled", "failed")


@dataclass(frozen=True, slots=True)
class NewTimer:
    kind: str
    owner: str
    due_at: datetime
    # A JSON object handed back to the job's handler when it is due. Its `content` member (what
    # a notification says) is removed once the job has run, was cancelled or failed.
    payload: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Timer:
    id: str
    kind: str
    owner: str
    key: str | None
    due_at: datetime
    payload: dict[str, Any]
    state: str
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    # The ids of the notifications a done job stored.
    result: tuple[str, ...]
