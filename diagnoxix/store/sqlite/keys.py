"""API keys and the audit log in the embedded store (`KeyStore`).

A mixin of `SqliteStore`, kept apart so each module holds one concern. Every API request looks
its key up by id: a serving process answers from the keys it found recently (`key_cache`), else
with a point read on the event loop (`_read_now`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from diagnoxix.json_encoding import encode_json
from diagnoxix.models import ApiKey, format_timestamp
from diagnoxix.store.key_cache import KeyCache
from diagnoxix.store.sqlite.access import SqliteAccess
from diagnoxix.store.sqlite.files import signal_key_revoked
from diagnoxix.store.sqlite.rows import audit_entry, row_to_api_key

log = logging.getLogger("diagnoxix.store")


# Idempotency records deleted per statement: the writer is never held long by a day's worth.
IDEMPOTENCY_PURGE_SLICE = 1000


class KeyQueries(SqliteAccess):
    """API keys and the audit log (`KeyStore`), on the store's primitives (`SqliteAccess`)."""

    # Set by `SqliteStore`: the database file, and the keys found recently (serving only).
    _path: Path
    _key_cache: KeyCache | None

    async def create_api_key(self, key_id: str, name: str, secret_hash: str) -> ApiKey:
        now = self._clock.now()
        await self._execute(
            "INSERT INTO api_keys (id, name, secret_hash, created_at) VALUES (?,?,?,?)",
            [(key_id, name, secret_hash, format_timestamp(now))],
        )
        return ApiKey(key_id, name, now, None, None)

    async def revoke_api_key(self, key_id: str) -> bool:
        changed = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            [(self._now_stamp(), key_id)],
        )
        if changed:
            self._key_revoked()
        return changed > 0

    def _key_revoked(self) -> None:
        """A revocation committed: no cache of keys, here or in the serving process, trusts a
        key it remembers from before (see `key_cache`)."""
        if self._key_cache is not None:
            self._key_cache.forget()
        try:
            signal_key_revoked(self._path)
        except OSError as exc:
            # The revocation stands; a serving process notices it when it reads the key again.
            log.warning("store.key_revocation_not_signalled", extra={"error": type(exc).__name__})

    def touch_api_key(self, key_id: str) -> None:
        self._execute_nowait(
            "UPDATE api_keys SET last_used_at = d.at FROM"
            " (SELECT value->>0 AS id, max(value->>1) AS at FROM json_each(?) GROUP BY 1) AS d"
            " WHERE api_keys.id = d.id",
            [[key_id, self._now_stamp()]],
        )

    def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any] | None = None
    ) -> None:
        if self._closing:
            # Never fail a request whose work already committed (its caller would retry it).
            log.warning("store.audit_dropped_at_shutdown", extra={"action": action, "actor": actor})
            return
        self._execute_nowait(
            "INSERT INTO audit_log (at, actor, action, target, details)"
            " SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?)",
            [[self._now_stamp(), actor, action, target, encode_json(details or {})]],
        )

    async def find_api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        cache = self._key_cache
        if cache is None:
            return await self._read_api_key(key_id)
        return await cache.find(key_id, self._read_api_key)

    async def _read_api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        rows = await self._read_now(
            "SELECT id, name, created_at, last_used_at, revoked_at, secret_hash FROM api_keys WHERE id = ?",
            (key_id,),
        )
        if not rows:
            return None
        return row_to_api_key(rows[0][:5]), str(rows[0][5])

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self._read(
            "SELECT id, name, created_at, last_used_at, revoked_at FROM api_keys ORDER BY created_at, id", ()
        )
        return [row_to_api_key(row) for row in rows]

    async def audit_entries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT id, at, actor, action, target, details FROM audit_log ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [audit_entry(r) for r in rows]

    async def purge_idempotency_records(self, older_than: timedelta) -> int:
        # By the age index (migration 0007): reads only the rows it deletes.
        return await self._execute(
            "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys"
            " WHERE created_at <= ? ORDER BY created_at LIMIT ?)",
            [(format_timestamp(self._clock.now() - older_than), IDEMPOTENCY_PURGE_SLICE)],
        )
