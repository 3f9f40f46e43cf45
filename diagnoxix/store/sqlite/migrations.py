"""Numbered SQL migrations from `db/migrations/`, tracked by `PRAGMA user_version`."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from diagnoxix.config import REPO_ROOT
from diagnoxix.store.protocols import StoreError

MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(StoreError):
    """The database is newer than this code, or a migration file is misnamed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


async def migrate(conn: aiosqlite.Connection, directory: Path = MIGRATIONS_DIR) -> int:
    """Apply every migration newer than the database, each in its own transaction."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    migrations = discover(directory)
    for migration in _pending(migrations, int(row[0]) if row else 0):
        # executescript commits first; BEGIN/COMMIT around it makes the migration atomic.
        await conn.executescript(_script(migration))
    return len(migrations)


def migrate_now(conn: sqlite3.Connection, directory: Path = MIGRATIONS_DIR) -> int:
    """`migrate` on a plain connection, for a command that has no event loop (`run.py restore`)."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    migrations = discover(directory)
    for migration in _pending(migrations, int(current)):
        conn.executescript(_script(migration))
    return len(migrations)


def _pending(migrations: list[Migration], current: int) -> list[Migration]:
    if current > len(migrations):
        raise MigrationError(
            f"database schema version {current} is newer than this release knows ({len(migrations)})"
        )
    return migrations[current:]


def _script(migration: Migration) -> str:
    script = migration.path.read_text(encoding="utf-8")
    return f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {migration.version};\nCOMMIT;"
