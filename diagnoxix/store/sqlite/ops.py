"""The writes queued to the single writer, and how each one's waiter hears its result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diagnoxix.models import Notification, NotificationDraft
from diagnoxix.store.protocols import IdempotencyClaim, StoreError
from diagnoxix.store.sqlite.batch import Query, Statement
from diagnoxix.store.staging import Lifetimes

log = logging.getLogger("diagnoxix.store")


@dataclass(slots=True)
class Insert:
    drafts: Sequence[NotificationDraft]
    idempotency: IdempotencyClaim | None
    future: asyncio.Future[list[Notification]]
    lifetimes: Lifetimes = field(default_factory=dict)


@dataclass(slots=True)
class Execute:
    """Statements run in order inside the batch's transaction, each once per parameter tuple.

    They commit or roll back together. The result is the rows changed by the last statement.

    `query`, if given, is read inside the same transaction after the statements (what they wrote,
    seqs included), and `on_commit` hears its rows once the transaction has committed: in commit
    order with every other write, after the batch's notifications are published and before any
    later batch's are (a correction's frame must reach clients in its seq's place).
    """

    statements: list[Statement]
    future: asyncio.Future[int]
    query: Query | None = None
    on_commit: Callable[[list[tuple[Any, ...]]], None] | None = None


@dataclass(slots=True)
class Bulk:
    """Bookkeeping nobody waits for (delivery marks, audit rows, key touches).

    `sql` takes one parameter, a JSON array of rows; every Bulk of a batch with the same SQL and
    callback becomes one statement, and `on_rows` hears the rows it changed.
    """

    sql: str
    rows: Sequence[Sequence[Any]]
    on_rows: Callable[[int], None] | None = None
    future: None = None


@dataclass(slots=True)
class Flush:
    future: asyncio.Future[None]


Op = Insert | Execute | Bulk | Flush


def resolve(
    ops: list[Op], stored: list[list[Notification] | Exception], executed: list[int | sqlite3.Error]
) -> None:
    inserts = iter(stored)
    results = iter(executed)
    for op in ops:
        if isinstance(op, Insert):
            notes = next(inserts)
            if isinstance(notes, Exception):
                fail(op, notes)
            elif not op.future.done():
                op.future.set_result(notes)
        elif isinstance(op, Execute):
            rowcount = next(results)
            if isinstance(rowcount, sqlite3.Error):
                fail(op, translate(rowcount))
            elif not op.future.done():
                op.future.set_result(rowcount)
        elif isinstance(op, Flush) and not op.future.done():
            op.future.set_result(None)


def translate(exc: Exception) -> Exception:
    log.error("store.write_failed", extra={"error": type(exc).__name__})
    return StoreError(f"the database refused the write ({type(exc).__name__})")


def fail_all(ops: list[Op], exc: Exception) -> None:
    for op in ops:
        fail(op, exc)


def fail(op: Op, exc: Exception) -> None:
    future = op.future
    if future is not None and not future.done():
        future.set_exception(exc)
        # A fire-and-forget write has nobody awaiting it; don't warn about an unretrieved error.
        with contextlib.suppress(BaseException):
            future.exception()
