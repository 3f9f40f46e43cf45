"""`open_store(settings)`: the one place a store is chosen and opened, for the server and the CLI;
and the CLI's backup and restore of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from diagnoxix.clock import Clock, SystemClock
from diagnoxix.config import Settings
from diagnoxix.store.postgres.database import PgStore
from diagnoxix.store.postgres.timers import TimerLeases
from diagnoxix.store.protocols import BackupError, BackupReport, RestoreReport, Store
from diagnoxix.store.sqlite.backup import backup_database
from diagnoxix.store.sqlite.restore import restore_database
from diagnoxix.store.sqlite.store import SqliteStore


@asynccontextmanager
async def open_store(
    settings: Settings, *, serving: bool = False, clock: Clock | None = None
) -> AsyncIterator[Store]:
    """The configured store, open, and closed again on the way out.

    `serving`: this process serves clients from it. On SQLite it is then the only one that may
    (its hub sees only what its own writer commits); the CLI's short commands share the file.
    PostgreSQL (`store_url`) is shared by any number of serving processes.
    `clock`: what decides expiry (the system's unless a test moves one by hand).
    """
    store: Store
    if settings.store_url:
        # Shared by every process of the deployment: no serving lock, the broker carries commits;
        # a job one process took is held from the others for longer than it may take.
        leases = TimerLeases.for_webhook_timeout(settings.webhook_timeout_seconds)
        store = PgStore(settings.store_url, clock=clock, leases=leases)
    else:
        store = SqliteStore(
            settings.db_path, synchronous=settings.sqlite_synchronous, exclusive=serving, clock=clock
        )
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def backup_store(settings: Settings, destination: Path, *, force: bool = False) -> BackupReport:
    """A consistent, verified copy of the configured store at `destination`, taken while a server
    may be serving from it; raises BackupError (a StoreError) saying why not."""
    _sqlite_only(settings, "backup")
    return backup_database(settings.db_path, destination, force=force)


def restore_store(settings: Settings, backup: Path, *, clock: Clock | None = None) -> RestoreReport:
    """Put a verified backup in place of the configured store, whose server must be stopped; the
    replaced database is kept aside. Raises BackupError (a StoreError) saying why not."""
    _sqlite_only(settings, "restore")
    return restore_database(backup, settings.db_path, clock=clock or SystemClock())


def _sqlite_only(settings: Settings, command: str) -> None:
    if settings.store_url:
        raise BackupError(
            f"{command} is for the SQLite file; back up and restore PostgreSQL with its own tools"
            " (pg_dump, pg_restore, or continuous archiving: docs/scaling.md)"
        )
