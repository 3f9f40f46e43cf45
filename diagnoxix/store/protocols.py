"""What the rest of the service may ask of a store, in small protocols by concern.

SQLite (`store.sqlite.store.SqliteStore`) is the embedded default; PostgreSQL is the planned second
implementation. Nothing outside `store/` writes SQL, and nothing here has a database's shape: rows
cross as records (`models`), delivery marks as (notification id, user id) pairs.

## The contract a second implementation must keep
- **Save before send.** `insert_notifications` returns only once the notifications are durable,
  and the commit listener hears of them before that, synchronously, in seq order.
- **Seqs become visible in commit order.** A reader that sees seq N sees every seq below N that
  will ever exist. Resume depends on it: a client that holds cursor N is never sent anything at or
  below N again, so a seq committed late below a cursor would be lost to it. PostgreSQL sequences
  alone do not give this (N+1 can commit before N): keep one writer per database, or hand out seqs
  from a commit-ordered counter.
- **A seq is never reused**, not even one whose notification was purged: a client may hold it.
- **Nothing expired is served**: every read of notifications skips what is past `expires_at`.
- Writes that nobody waits for (delivery marks, key touches, audit) are committed with the next
  batch; `flush` waits for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from diagnoxix.errors import Unavailable
from diagnoxix.models import ApiKey, Device, IdempotencyRecord, Notification, NotificationDraft, StoreCounts
from diagnoxix.rules.preferences import Preferences
from diagnoxix.store.backup_records import BackupReport as BackupReport
from diagnoxix.store.backup_records import RestoreReport as RestoreReport
from diagnoxix.store.correction_records import Correction as Correction
from diagnoxix.store.correction_records import CorrectionKind as CorrectionKind
from diagnoxix.store.correction_records import CorrectionResult as CorrectionResult
from diagnoxix.store.critical_records import CriticalStore
from diagnoxix.store.messaging_records import MessagingStore
from diagnoxix.store.push_protocol import PushStore as PushStore
from diagnoxix.store.timer_records import TIMER_CLAIMS, NewTimer, Timer
from diagnoxix.store.webhook_records import WebhookStore as WebhookStore

# Called synchronously, in seq order, right after notifications are committed (and before any
# sender hears that they were stored).
CommitListener = Callable[[Sequence[Notification]], None]
# Called synchronously with each committed correction, in seq order with the notifications (after
# those committed before it, before any committed after it) and before its caller hears of it.
CorrectionListener = Callable[[Correction], None]
# Called after a user acknowledged or read notifications: ("acknowledged" | "read", how many
# changed state per (type, priority)). What the metrics count; nothing else depends on it.
MarkListener = Callable[[str, Mapping[tuple[str, str], int]], None]
# One delivery record: (notification id, user id). A broadcast's id with the user who got it.
Delivered = tuple[str, str]


class StoreError(RuntimeError):
    """The store could not do what was asked (closed, or the database refused)."""


class StoreUnavailable(StoreError, Unavailable):
    """The store cannot answer now (shutting down, the database gone or not answering): a
    request that meets one where no route answered it itself gets a 503 (`errors.Unavailable`)."""


class StoreClosed(StoreUnavailable):
    """A write arrived after the store started shutting down."""


class IdempotencyConflict(StoreError):
    """Another request already claimed this Idempotency-Key; nothing new was stored."""


class BackupError(StoreError):
    """A backup or a restore could not be made; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    api_key_id: str
    key: str
    request_hash: str
    status: int


class NotificationStore(Protocol):
    """Notifications and their delivery state: what sending, resuming and reading need."""

    @property
    def epoch(self) -> str:
        """Fixed once the store is open; changes only when the database is replaced, so a client's
        old resume cursor can be recognised as meaningless."""

    async def last_seq(self) -> int:
        """The highest seq committed so far (0 for an empty store)."""

    async def counts(self) -> StoreCounts: ...

    def add_commit_listener(self, listener: CommitListener) -> None:
        """`listener` hears of every notification committed from now on (see CommitListener)."""

    def add_mark_listener(self, listener: MarkListener) -> None:
        """`listener` hears of acknowledgements and reads from now on (see MarkListener)."""

    async def insert_notifications(
        self,
        drafts: Sequence[NotificationDraft],
        idempotency: IdempotencyClaim | None = None,
        *,
        lifetimes: Mapping[str, int] | None = None,
    ) -> list[Notification]:
        """Store drafts durably (one transaction with the idempotency claim) and return them.

        A draft without `ttl_seconds` lives `lifetimes[priority]` seconds, a broadcast
        `lifetimes[BROADCAST_RECIPIENT]`; forever when the mapping has no entry.
        """

    def record_deliveries(self, own: Sequence[Delivered], broadcasts: Sequence[Delivered]) -> None:
        """Record frames written to clients that cannot acknowledge, without waiting: the users'
        own notifications and broadcasts. Committed with the next batch."""

    async def acknowledge(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Record the user's acknowledgement; returns the ids that were theirs to acknowledge."""

    async def mark_read(self, user_id: str, notification_ids: Sequence[str]) -> list[str]:
        """Mark the user's own notifications read; returns the ids that were theirs."""

    async def mark_all_read(self, user_id: str) -> int:
        """Every notification of the user committed when this was asked; returns how many."""

    async def unread_count(self, user_id: str, *, upto_seq: int | None = None) -> int:
        """The user's own notifications not read yet, up to `upto_seq` (a welcome counts what its
        replay covers) or all committed; broadcasts carry no read state."""

    async def purge_expired(self) -> int:
        """Delete one slice of what has expired; returns how many notifications were deleted
        (0: nothing expired is left)."""

    async def purged_through(self, user_id: str) -> int:
        """The highest purged seq among the user's notifications and broadcasts: a resume cursor
        below it may have missed something."""

    def undone_by_restore(self, seq: int) -> bool:
        """Whether `seq` was handed out by a history that a restore from backup undid: a cursor
        there names a notification this store never held, and no new one ever gets that seq."""

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


class CorrectionStore(Protocol):
    """Corrections: retract a notification (its row goes, overwritten on disk) or update its words.

    Each correction commits with a seq of its own, past every seq handed out so far, and the
    process's `last_seq` includes it once the call returns.
    """

    def add_correction_listener(self, listener: CorrectionListener) -> None:
        """`listener` hears of every correction committed from now on (see CorrectionListener)."""

    async def retract_notification(self, notification_id: str) -> CorrectionResult: ...

    async def update_notification(
        self, notification_id: str, *, title: str | None, message: str | None
    ) -> CorrectionResult: ...

    async def corrections_for(
        self, user_id: str, *, after_seq: int, upto_seq: int, limit: int
    ) -> list[Correction]:
        """Oldest first: corrections of the user's notifications and of broadcasts in
        (after_seq, upto_seq]. An update whose notification is gone since (retracted, expired)
        comes without words (`title` None)."""


class KeyStore(Protocol):
    """API keys (stored hashed) and the append-only audit log."""

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

    async def purge_idempotency_records(self, older_than: timedelta) -> int:
        """Delete one slice of the Idempotency-Key records made `older_than` ago or earlier (by the
        store's clock); returns how many (0: none left). A retry after that is a new request."""


# A revoked token still alive: (token id, when the token expires). What every process keeps in
# memory so that checking a token never waits for the database.
RevokedToken = tuple[str, datetime]


class DeviceStore(Protocol):
    """Devices: one record per minted connection token (its id, never the token), for listing
    and revoking a user's tokens."""

    async def record_device(
        self, token_id: str, user_id: str, created_at: datetime, expires_at: datetime
    ) -> None:
        """A token was minted; returns once the record is durable."""

    def touch_device(
        self,
        token_id: str,
        user_id: str,
        created_at: datetime,
        expires_at: datetime,
        user_agent: str | None,
    ) -> None:
        """The token was just used to connect, without waiting: last seen, and the user agent
        when one is given. Creates the record of a token minted before devices were recorded."""

    async def list_devices(self, user_id: str, *, limit: int) -> list[Device]:
        """The user's devices whose tokens have not expired, newest first."""

    async def find_device(self, user_id: str, token_id: str) -> Device | None:
        """The device if it is the user's (another user's id is not found)."""

    async def revoke_devices(self, user_id: str, token_id: str | None) -> list[RevokedToken]:
        """Revoke one of the user's devices (or, with None, every one whose token is alive);
        returns those revoked by this call, once that is durable."""

    async def revoked_tokens(self) -> list[RevokedToken]:
        """Every revoked token that has not expired yet (loaded by each process at start)."""


# Filters of the dashboard's notification list. "queued": stored, never sent to its user.
NOTIFICATION_STATUSES = ("queued", "delivered", "read", "broadcast")


@dataclass(frozen=True, slots=True)
class StaffAccount:
    username: str
    password_hash: str
    role: str
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class StaffSession:
    id_hash: str
    username: str
    role: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class StaffStore(Protocol):
    """The staff dashboard: accounts, sign-in sessions, failed logins, listings across users."""

    async def create_staff_account(self, username: str, password_hash: str, role: str) -> bool:
        """False when the username is taken (nothing changes then)."""

    async def find_staff_account(self, username: str) -> StaffAccount | None: ...

    async def count_staff_accounts(self) -> int: ...

    async def create_staff_session(self, id_hash: str, username: str, expires_at: datetime) -> None: ...

    async def find_staff_session(self, id_hash: str) -> StaffSession | None: ...

    async def revoke_staff_session(self, id_hash: str) -> bool:
        """True when the session was live and is now revoked."""

    async def set_staff_password(self, username: str, password_hash: str) -> bool:
        """Replace the account's password hash and end all its sessions; False: no such account."""

    async def set_staff_disabled(self, username: str, disabled: bool) -> bool:
        """Disable (ending all its sessions) or enable an account; False: no such account."""

    async def record_login_failure(self, username: str) -> None: ...

    async def clear_login_failures(self, username: str) -> None: ...

    async def count_login_failures(self, username: str, since: datetime) -> int: ...

    async def purge_login_failures(self, older_than: timedelta) -> int:
        """Delete one slice of the failed sign-ins recorded `older_than` ago or earlier (by the
        store's clock); returns how many (0: none left)."""

    async def purge_staff_sessions(self, ended_more_than: timedelta) -> int:
        """Delete one slice of the sessions that expired or were revoked `ended_more_than` ago or
        earlier; returns how many (0: none left). A live session is never deleted."""

    async def list_notifications(
        self,
        *,
        user_id: str | None,
        type: str | None,
        status: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Notification]:
        """Newest first, every recipient; `status` is one of NOTIFICATION_STATUSES."""

    async def count_read_since(self, since: datetime) -> int: ...

    async def audit_page(self, *, before_id: int | None, limit: int) -> list[dict[str, Any]]:
        """Newest first, entries with id < before_id."""


# Timers: jobs due at a time (see `TimerStore`). A job's effect stores its notifications with
# `timer_claim(job id)` as their idempotency claim: the store marks the job done in that same
# transaction, and a second run (after a crash) or a cancellation finds the claim taken.


def timer_claim(timer_id: str) -> IdempotencyClaim:
    """The claim a job's notifications are stored with: its effect and its completion commit
    together, once (a second attempt gets IdempotencyConflict)."""
    return IdempotencyClaim(TIMER_CLAIMS, timer_id, "", 201)


class TimerKeyTaken(StoreError):
    """The owner already has a pending job of this kind under this key; nothing was stored."""

    def __init__(self, key: str) -> None:
        super().__init__(f"a pending job already has the key {key!r}")
        self.key = key


class TimerStore(Protocol):
    """Durable timers: jobs of a `kind`, due at a time, run once by `delivery.timers`."""

    async def add_timers(
        self, timers: Sequence[NewTimer], idempotency: IdempotencyClaim | None = None
    ) -> list[Timer]:
        """Store pending jobs in one transaction (with the request's idempotency claim, whose
        record then lists the jobs' ids); returns them once durable. Raises TimerKeyTaken, or
        IdempotencyConflict when the claim is taken."""

    async def due_timers(self, *, limit: int) -> list[Timer]:
        """Pending jobs whose time has come (by the store's clock), soonest first."""

    async def next_due_at(self) -> datetime | None:
        """When the soonest pending job is due; None: there is none."""

    async def get_timers(self, owner: str, timer_ids: Sequence[str]) -> list[Timer]:
        """The owner's jobs among these ids (another owner's are not found), in the ids' order."""

    async def pending_timers(self, owner: str, kind: str, *, after_id: str | None, limit: int) -> list[Timer]:
        """The owner's pending jobs of `kind`, soonest first, after the job `after_id` (a page)."""

    async def find_timer_by_key(self, owner: str, kind: str, key: str) -> Timer | None:
        """The owner's pending job with this key, else the latest one that had it."""

    async def cancel_timer(self, owner: str, timer_id: str) -> bool:
        """Cancel the owner's pending job; True when this call cancelled it (False: it had run,
        was cancelled already, or is not the owner's). Once True, the job never runs."""

    async def retry_timer(self, timer_id: str, due_at: datetime | None) -> None:
        """Count a failed attempt: run it again at `due_at`, or (None) give up: `failed`."""

    async def finish_timer(self, timer_id: str) -> bool:
        """Mark a pending job done whose effect left the server (an outgoing HTTP call) rather than
        being stored; True when this call finished it."""

    async def purge_finished_timers(self, older_than: timedelta) -> int:
        """Delete one slice of the jobs that finished (sent, cancelled, failed) `older_than` ago or
        earlier; returns how many (0: none left). A pending job is never deleted."""


class PreferenceStore(Protocol):
    """Each user's channel preferences (`rules.preferences`): none stored means the defaults."""

    async def get_preferences(self, user_id: str) -> Preferences | None: ...

    async def put_preferences(self, user_id: str, prefs: Preferences) -> None:
        """Replace the user's preferences with `prefs`."""

    async def delete_preferences(self, user_id: str) -> bool:
        """Back to the defaults; False when there was nothing stored."""


class Store(
    NotificationStore,
    KeyStore,
    StaffStore,
    DeviceStore,
    TimerStore,
    CorrectionStore,
    PreferenceStore,
    WebhookStore,
    CriticalStore,
    MessagingStore,
    PushStore,
    Protocol,
):
    """One database behind every concern, with its lifecycle (`store.open_store` makes one)."""

    async def get_or_create_meta(self, key: str, default: Callable[[], str]) -> str:
        """A value kept with the database (the server secret, the epoch), made on first use."""

    async def check(self) -> None:
        """Raise StoreError unless the database answers a trivial read (liveness)."""

    async def check_writable(self) -> None:
        """Raise StoreError unless a small write commits now (readiness: a full disk fails it)."""

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed."""

    def set_commit_barrier(self, barrier: Callable[[], Awaitable[None]] | None) -> None:
        """What a commit that took seqs awaits, after its listeners ran, before any process may
        commit the next: the broker's `drain`, so every hub hears events in seq order. A store
        only one process writes (SQLite) has no use for it."""

    async def close(self) -> None:
        """Commit what is queued and release the database; safe to call twice."""
