"""Numbered SQL migrations from `db/postgresql/`, tracked in `schema_migrations`.

Several processes may start at once: the first to take the migration lock applies what is
missing, each file in its own transaction; the others wait for the lock and find nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnoxix.config import REPO_ROOT
from diagnoxix.store.protocols import StoreError

MIGRATIONS_DIR = REPO_ROOT / "db" / "postgresql"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# The advisory lock held while migrating (an arbitrary constant, not the writer's).
MIGRATION_LOCK = 0x6469_6167_6D69_6772


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


async def migrate(conn: Any, directory: Path = MIGRATIONS_DIR) -> int:
    """Apply the migrations the database lacks; returns its version after."""
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
        if current > len(migrations):
            raise MigrationError(
                f"the database is at schema version {current}, newer than this code"
                f" ({len(migrations)}): upgrade the code, or restore a matching backup"
            )
        for migration in migrations[current:]:
            async with conn.transaction():
                await conn.execute(migration.path.read_text(encoding="utf-8"))
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", migration.version)
        return len(migrations)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
