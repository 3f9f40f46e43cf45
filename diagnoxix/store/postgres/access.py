"""What every query mixin of the PostgreSQL store may use: reads on the pool, writes through the
one writer of this process (`writer.PgWriter`), the store's clock.

A write is a coroutine function of a `WriteTx` (its connection, inside the batch's transaction).
It may run twice: when a batch fails, each of its writes is run again alone, so one refused write
never takes the others with it. It must therefore only touch the database and `tx`, and leave
anything else to `tx.after_commit`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from diagnoxix.clock import Clock

T = TypeVar("T")


class WriteTx(Protocol):
    """One write's view of the batch transaction it runs in."""

    @property
    def conn(self) -> Any:
        """The asyncpg connection, inside the transaction (typed Any: asyncpg ships no stubs)."""

    def take_seqs(self, count: int) -> int:
        """`count` seqs, the first returned; only in a write submitted with `sequenced=True`.
        They become visible to every process in order: no other writer commits meanwhile."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` right after the commit, in commit (and seq) order with every other
        write's, before the next writer of any process may commit."""


Write = Callable[[WriteTx], Awaitable[T]]


class PgAccess:
    """The members the query mixins use; `PgStore` provides them."""

    _clock: Clock

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """All rows of one read (asyncpg Records: index or key them)."""
        raise NotImplementedError

    async def _fetchrow(self, sql: str, *args: Any) -> Any | None:
        raise NotImplementedError

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        raise NotImplementedError

    async def _write(self, work: Write[T], *, sequenced: bool = False) -> T:
        """Run `work` in this process's next write batch and return what it returned, once
        committed. Errors it raises reach the caller as raised (a StoreError when the database
        failed)."""
        raise NotImplementedError

    def _write_nowait(self, work: Write[Any]) -> None:
        """Bookkeeping (deliveries, last use, audit): in the next batch, not awaited; a failure is
        logged, never raised. Dropped once the store is closing."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed."""
        raise NotImplementedError

    def _outlived(self) -> str:
        """The expiry before which a device's token can never be accepted again (`devices`)."""
        raise NotImplementedError

    def _now_stamp(self) -> str:
        """The store clock's now, as stored (the same text as SQLite's: ISO 8601, UTC)."""
        raise NotImplementedError
