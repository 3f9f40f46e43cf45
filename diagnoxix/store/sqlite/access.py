"""What the store's query mixins (reads, keys, staff, devices, timers) use of `SqliteStore`, declared once.

Each mixin holds one concern's SQL; `SqliteStore` inherits them all and implements these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from diagnoxix.clock import Clock


class SqliteAccess:
    # Set by `SqliteStore`: shutting down (bookkeeping writes are dropped), and the time it reads.
    _closing: bool
    _clock: Clock

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One statement on the reader's connection, run to completion."""
        raise NotImplementedError

    async def _read_now(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """A point read by key on the event loop itself."""
        raise NotImplementedError

    async def _execute(self, sql: str, params: list[tuple[Any, ...]]) -> int:
        """A write in the next batch, awaited; the rows the statement changed."""
        raise NotImplementedError

    async def _execute_all(
        self,
        statements: list[tuple[str, list[tuple[Any, ...]]]],
        *,
        query: tuple[str, tuple[Any, ...]] | None = None,
        on_commit: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> int:
        """Several statements in the next batch, all or nothing, awaited; the rows the last changed.

        `on_commit` hears what `query` read inside the transaction, right after the commit and in
        commit order with every other write (`store.sqlite.ops.Execute`).
        """
        raise NotImplementedError

    def _execute_nowait(
        self, sql: str, rows: Sequence[Sequence[Any]], on_rows: Callable[[int], None] | None = None
    ) -> None:
        """A bookkeeping write in the next batch, not awaited."""
        raise NotImplementedError

    @property
    def max_seq(self) -> int:
        """The highest seq committed, as this process knows it."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed."""
        raise NotImplementedError

    def _now_stamp(self) -> str:
        """The store clock's now, as stored."""
        raise NotImplementedError
