"""API keys and the audit log on PostgreSQL (`KeyStore`), as `store.sqlite.keys` does them.

A mixin of `PgStore`. Like a serving SQLite store, each process answers API-key lookups from the
keys it found recently (`store.key_cache`), told of revocations by PostgreSQL
(`key_revocations`). The audit log is append-only in the database itself (a trigger refuses
UPDATE and DELETE, db/postgresql/0001_core.sql). Its ids come from a sequence shared by every
process, so they are unique and only roughly in commit order across processes.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from diagnoxix.json_encoding import encode_json
from diagnoxix.models import ApiKey, format_timestamp
from diagnoxix.store.key_cache import KeyCache
from diagnoxix.store.postgres.access import PgAccess, WriteTx
from diagnoxix.store.postgres.key_revocations import NOTIFY, RevocationListener
from diagnoxix.store.postgres.rows import AUDIT_COLUMNS, BYTEWISE, audit_entry, changed, row_to_api_key

log = logging.getLogger("diagnoxix.store")

# Idempotency records deleted per statement: the writer is never held long by a day's worth.
IDEMPOTENCY_PURGE_SLICE = 1000

_KEY_COLUMNS = "id, name, created_at, last_used_at, revoked_at"


class PgKeyQueries(PgAccess):
    """API keys and the audit log (`KeyStore`), on the store's primitives (`PgAccess`)."""

    # Set by `PgCore`: shutting down (bookkeeping writes are dropped); the keys found recently,
    # and what tells this process of revocations (every process's).
    _closing: bool
    _key_cache: KeyCache
    _revocations: RevocationListener

    async def create_api_key(self, key_id: str, name: str, secret_hash: str) -> ApiKey:
        now = self._clock.now()
        stamp = format_timestamp(now)

        async def insert(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO api_keys (id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4)",
                key_id,
                name,
                secret_hash,
                stamp,
            )

        await self._write(insert)
        return ApiKey(key_id, name, now, None, None)

    async def revoke_api_key(self, key_id: str) -> bool:
        stamp = self._now_stamp()

        async def revoke(tx: WriteTx) -> bool:
            status = await tx.conn.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", stamp, key_id
            )
            if not changed(status):
                return False
            # Every process's cache of keys hears of it once this commits (`key_revocations`).
            await tx.conn.execute(NOTIFY)
            return True

        revoked = await self._write(revoke)
        if revoked:
            self._key_cache.forget()
        return revoked

    def touch_api_key(self, key_id: str) -> None:
        stamp = self._now_stamp()

        async def touch(tx: WriteTx) -> None:
            # Never backwards: another process may have recorded a later use already.
            await tx.conn.execute(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2"
                " AND (last_used_at IS NULL OR last_used_at < $1)",
                stamp,
                key_id,
            )

        self._write_nowait(touch)

    def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any] | None = None
    ) -> None:
        if self._closing:
            # Never fail a request whose work already committed (its caller would retry it).
            log.warning("store.audit_dropped_at_shutdown", extra={"action": action, "actor": actor})
            return
        row = (self._now_stamp(), actor, action, target, encode_json(details or {}))

        async def append(tx: WriteTx) -> None:
            await tx.conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)", *row
            )

        self._write_nowait(append)

    async def find_api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        """From the keys this process found recently while it hears of revocations, else read.
        The first lookup starts listening: a command that never looks a key up never does."""
        self._revocations.start()
        return await self._key_cache.find(key_id, self._read_api_key)

    async def _read_api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        row = await self._fetchrow(f"SELECT {_KEY_COLUMNS}, secret_hash FROM api_keys WHERE id = $1", key_id)
        if row is None:
            return None
        return row_to_api_key(row), str(row[5])

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id {BYTEWISE}")
        return [row_to_api_key(row) for row in rows]

    async def audit_entries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._fetch(f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1", limit)
        return [audit_entry(row) for row in rows]

    async def purge_idempotency_records(self, older_than: timedelta) -> int:
        cutoff = format_timestamp(self._clock.now() - older_than)

        async def purge(tx: WriteTx) -> int:
            # By the age index: reads only the rows it deletes.
            status = await tx.conn.execute(
                "DELETE FROM idempotency_keys WHERE (api_key_id, key) IN (SELECT api_key_id, key"
                " FROM idempotency_keys WHERE created_at <= $1 ORDER BY created_at LIMIT $2)",
                cutoff,
                IDEMPOTENCY_PURGE_SLICE,
            )
            return changed(status)

        return await self._write(purge)
