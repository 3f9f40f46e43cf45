"""The notification store's interface: what the service, the hub and the API may ask of it.

SQLite (`sqlite_store.SqliteStore`) is the embedded default; PostgreSQL is the planned second
implementation. Nothing outside the store writes SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .models import ApiKey, IdempotencyRecord, Notification, NotificationDraft, StoreCounts

CommitListener = Callable[[Sequence[Notification]], None]


class StoreError(RuntimeError):
    """The store could not do what was asked (closed, or the database refused)."""


class StoreClosed(StoreError):
    """A write arrived after the store started shutting down."""


class IdempotencyConflict(StoreError):
    """Another request already claimed this Idempotency-Key; nothing new was stored."""


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    api_key_id: str
    key: str
    request_hash: str
    status: int


class Store(Protocol):
    @property
    def max_seq(self) -> int:
        """The highest seq committed so far (0 for an empty store)."""

    @property
    def epoch(self) -> str:
        """Changes when the database is replaced, so old resume cursors can be recognised."""

    def counts(self) -> StoreCounts: ...

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Called synchronously, in seq order, right after notifications are committed."""

    async def insert_notifications(
        self, drafts: Sequence[NotificationDraft], idempotency: IdempotencyClaim | None = None
    ) -> list[Notification]:
        """Store drafts durably (one transaction with the idempotency claim) and return them."""

    def mark_delivered(
        self, user_id: str, notification_ids: Sequence[str], broadcast_ids: Sequence[str] = ()
    ) -> None:
        """Record delivery to `user_id` of its own notifications and of broadcasts, without
        waiting; committed with the next batch."""

    async def acknowledge(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Record the user's acknowledgement; returns the ids that were theirs to acknowledge."""

    async def mark_read(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Mark the user's own notifications read; returns the ids that were theirs."""

    async def mark_all_read(self, user_id: str) -> int: ...

    async def unread_count(self, user_id: str, *, upto_seq: int | None = None) -> int: ...

    async def purge_expired(self) -> int:
        """Delete what has expired; returns how many notifications were deleted."""

    async def purged_through(self, user_id: str) -> int:
        """The highest purged seq among the user's notifications and broadcasts: a resume cursor
        below it may have missed something."""

    async def notifications_for(
        self,
        user_id: str,
        *,
        after_seq: int,
        upto_seq: int,
        limit: int,
        undelivered_only: bool = False,
    ) -> list[Notification]:
        """Oldest first: the user's own notifications and broadcasts in (after_seq, upto_seq].

        With `undelivered_only`, only those never delivered to this user.
        """

    async def history(
        self,
        user_id: str,
        *,
        before_seq: int | None,
        limit: int,
        type: str | None = None,
        unread_only: bool = False,
    ) -> list[Notification]:
        """Newest first: the user's notifications and broadcasts with seq < before_seq."""

    async def get_notifications(self, notification_ids: Sequence[str]) -> list[Notification]: ...

    async def get_idempotency(self, api_key_id: str, key: str) -> IdempotencyRecord | None: ...

    async def create_api_key(self, key_id: str, name: str, secret_hash: str) -> ApiKey: ...

    async def find_api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its stored secret hash."""

    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...

    def touch_api_key(self, key_id: str) -> None:
        """Record a use of the key without waiting."""

    def record_audit(
        self, actor: str, action: str, target: str | None, details: dict[str, Any] | None = None
    ) -> None:
        """Append to the audit log without waiting; committed with the next batch."""

    async def audit_entries(self, *, limit: int = 100) -> list[dict[str, Any]]: ...

    async def get_or_create_meta(self, key: str, default: Callable[[], str]) -> str: ...

    async def check(self) -> None:
        """Raise StoreError unless the database answers a trivial read."""

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed."""
