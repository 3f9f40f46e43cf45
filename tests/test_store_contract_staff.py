"""The store contract, the staff dashboard: the same tests on SQLite and PostgreSQL
(`store_backends.store`). Accounts are taken once, sessions end with a new password or a disabled
account, failed sign-ins are counted and purged in slices, and the listings across users filter,
page and never show what expired. Time is moved with the store's ManualClock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from diagnoxix.clock import ManualClock
from diagnoxix.models import BROADCAST_RECIPIENT, NotificationDraft, format_timestamp
from diagnoxix.store.postgres import staff as pg_staff
from diagnoxix.store.protocols import StoreError
from diagnoxix.store.retention import LOGIN_FAILURES_KEPT, STAFF_SESSIONS_KEPT
from diagnoxix.store.sqlite import staff as sqlite_staff

from .store_sql import count_rows, execute

SLICE = sqlite_staff.STAFF_PURGE_SLICE
LIFETIME = timedelta(hours=8)


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_both_stores_purge_the_same_slices() -> None:
    assert pg_staff.STAFF_PURGE_SLICE == SLICE


async def test_a_username_is_taken_once(store: Any, store_clock: ManualClock) -> None:
    assert await store.count_staff_accounts() == 0
    assert await store.create_staff_account("alice", "hash-1", "admin") is True
    assert await store.create_staff_account("alice", "hash-2", "staff") is False
    assert await store.create_staff_account("bob", "hash-3", "staff") is True
    assert await store.count_staff_accounts() == 2
    alice = await store.find_staff_account("alice")
    assert alice is not None
    assert (alice.username, alice.password_hash, alice.role) == ("alice", "hash-1", "admin")
    assert (alice.created_at, alice.disabled_at) == (_ms(store_clock.now()), None)
    assert await store.find_staff_account("carol") is None
    with pytest.raises(StoreError):  # the schema knows two roles
        await store.create_staff_account("dave", "hash-4", "root")
    assert await store.count_staff_accounts() == 2


async def test_a_session_is_found_with_its_role_and_revoked_once(
    store: Any, store_clock: ManualClock
) -> None:
    await store.create_staff_account("alice", "hash", "staff")
    expires = store_clock.now() + LIFETIME
    await store.create_staff_session("sid-1", "alice", expires)
    session = await store.find_staff_session("sid-1")
    assert session is not None
    assert (session.id_hash, session.username, session.role) == ("sid-1", "alice", "staff")
    assert (session.created_at, session.expires_at, session.revoked_at) == (
        _ms(store_clock.now()),
        _ms(expires),
        None,
    )
    assert await store.find_staff_session("sid-unknown") is None

    store_clock.advance(60)
    assert await store.revoke_staff_session("sid-1") is True
    assert await store.revoke_staff_session("sid-1") is False
    assert await store.revoke_staff_session("sid-unknown") is False
    revoked = await store.find_staff_session("sid-1")
    assert revoked is not None
    assert revoked.revoked_at == _ms(store_clock.now())


async def test_a_new_password_ends_every_session_of_the_account(store: Any, store_clock: ManualClock) -> None:
    await store.create_staff_account("alice", "old", "admin")
    await store.create_staff_account("bob", "bob's", "staff")
    end = store_clock.now() + LIFETIME
    for sid, user in (("a1", "alice"), ("a2", "alice"), ("b1", "bob")):
        await store.create_staff_session(sid, user, end)

    assert await store.set_staff_password("alice", "new") is True
    alice = await store.find_staff_account("alice")
    assert alice is not None
    assert alice.password_hash == "new"
    for sid in ("a1", "a2"):
        session = await store.find_staff_session(sid)
        assert session is not None, sid
        assert session.revoked_at is not None, sid
    bob = await store.find_staff_session("b1")
    assert bob is not None
    assert bob.revoked_at is None
    assert await store.set_staff_password("nobody", "x") is False


async def test_a_disabled_account_has_no_sessions_until_enabled(store: Any, store_clock: ManualClock) -> None:
    await store.create_staff_account("alice", "hash", "staff")
    await store.create_staff_session("a1", "alice", store_clock.now() + LIFETIME)

    assert await store.set_staff_disabled("alice", True) is True
    account = await store.find_staff_account("alice")
    assert account is not None
    assert account.disabled_at == _ms(store_clock.now())
    assert await store.find_staff_session("a1") is None  # a disabled account's session is nobody's

    assert await store.set_staff_disabled("alice", False) is True
    account = await store.find_staff_account("alice")
    assert account is not None
    assert account.disabled_at is None
    session = await store.find_staff_session("a1")
    assert session is not None
    assert session.revoked_at is not None
    # Enabling ends nothing: a session begun after it lives.
    await store.create_staff_session("a2", "alice", store_clock.now() + LIFETIME)
    assert await store.set_staff_disabled("alice", False) is True
    again = await store.find_staff_session("a2")
    assert again is not None
    assert again.revoked_at is None
    assert await store.set_staff_disabled("nobody", True) is False


async def test_failed_sign_ins_are_counted_since_a_time_and_cleared_per_name(
    store: Any, store_clock: ManualClock
) -> None:
    start = store_clock.now()
    await store.record_login_failure("login:a")
    store_clock.advance(10)
    middle = store_clock.now()
    await store.record_login_failure("login:a")
    await store.record_login_failure("login:b")
    assert await store.count_login_failures("login:a", start) == 2
    assert await store.count_login_failures("login:a", middle) == 1
    assert await store.count_login_failures("login:a", middle + timedelta(milliseconds=1)) == 0
    await store.clear_login_failures("login:a")
    assert await store.count_login_failures("login:a", start) == 0
    assert await store.count_login_failures("login:b", start) == 1


async def test_failed_sign_ins_go_in_slices_once_old_enough(store: Any, store_clock: ManualClock) -> None:
    count = SLICE * 2 + 5
    # Concurrently, so the writer commits them in a few batches.
    async with asyncio.timeout(60):
        await asyncio.gather(*(store.record_login_failure(f"login:{i % 7}") for i in range(count)))
    store_clock.advance(LOGIN_FAILURES_KEPT.total_seconds() - 60)
    await store.record_login_failure("login:recent")
    assert await store.purge_login_failures(LOGIN_FAILURES_KEPT) == 0  # nothing old enough yet

    store_clock.advance(60)
    assert await store.purge_login_failures(LOGIN_FAILURES_KEPT) == SLICE
    assert await count_rows(store, "login_failures") == count - SLICE + 1
    assert await store.purge_login_failures(LOGIN_FAILURES_KEPT) == SLICE
    assert await store.purge_login_failures(LOGIN_FAILURES_KEPT) == 5
    assert await store.purge_login_failures(LOGIN_FAILURES_KEPT) == 0
    assert await count_rows(store, "login_failures") == 1
    assert await store.count_login_failures("login:recent", store_clock.now() - timedelta(hours=2)) == 1


async def test_ended_sessions_go_a_while_after_they_ended(store: Any, store_clock: ManualClock) -> None:
    await store.create_staff_account("alice", "hash", "admin")
    start = store_clock.now()
    await store.create_staff_session("signed-out", "alice", start + LIFETIME)
    await store.create_staff_session("expires", "alice", start + LIFETIME)
    await store.create_staff_session("live", "alice", start + LIFETIME + STAFF_SESSIONS_KEPT * 2)
    store_clock.advance(60)
    assert await store.revoke_staff_session("signed-out")

    store_clock.advance(STAFF_SESSIONS_KEPT.total_seconds())
    assert await store.purge_staff_sessions(STAFF_SESSIONS_KEPT) == 1
    assert await store.purge_staff_sessions(STAFF_SESSIONS_KEPT) == 0
    assert await store.find_staff_session("signed-out") is None
    assert await store.find_staff_session("expires") is not None

    store_clock.advance(LIFETIME.total_seconds())
    assert await store.purge_staff_sessions(STAFF_SESSIONS_KEPT) == 1
    assert await store.find_staff_session("expires") is None
    live = await store.find_staff_session("live")  # never deleted while live, whatever its age
    assert live is not None
    assert live.revoked_at is None
    assert await count_rows(store, "staff_sessions") == 1


def _draft(user: str, kind: str = "custom", ttl: int | None = None) -> NotificationDraft:
    return NotificationDraft(
        user_id=user, type=kind, title=f"{user}/{kind}", message="m", data={}, ttl_seconds=ttl
    )


async def _mark(store: Any, note_id: str, column: str, at: datetime) -> None:
    """Set a notification's delivered_at or read_at as the delivery and read paths do."""
    assert column in ("delivered_at", "read_at")
    assert await execute(
        store, f"UPDATE notifications SET {column} = $1 WHERE id = $2", format_timestamp(at), note_id
    )


async def test_the_notifications_listing_filters_pages_and_hides_what_expired(
    store: Any, store_clock: ManualClock
) -> None:
    notes = await store.insert_notifications(
        [
            _draft("u1", "lab_result"),  # queued
            _draft("u1", "appointment"),  # delivered
            _draft("u2", "lab_result"),  # read
            _draft(BROADCAST_RECIPIENT, "notice"),  # a broadcast
            _draft("u1", "lab_result", ttl=60),  # expires
        ]
    )
    queued, delivered, read, broadcast, expiring = notes
    now = store_clock.now()
    await _mark(store, delivered.id, "delivered_at", now)
    await _mark(store, read.id, "delivered_at", now)
    await _mark(store, read.id, "read_at", now)

    async def listed(**filters: Any) -> list[str]:
        query: dict[str, Any] = {
            "user_id": None,
            "type": None,
            "status": None,
            "before_seq": None,
            "limit": 10,
        }
        return [n.id for n in await store.list_notifications(**{**query, **filters})]

    everything = [expiring.id, broadcast.id, read.id, delivered.id, queued.id]
    assert await listed() == everything
    assert await listed(user_id="u1") == [expiring.id, delivered.id, queued.id]
    assert await listed(type="lab_result") == [expiring.id, read.id, queued.id]
    assert await listed(user_id="u1", type="lab_result") == [expiring.id, queued.id]
    assert await listed(status="queued") == [expiring.id, queued.id]
    assert await listed(status="delivered") == [delivered.id]
    assert await listed(status="read") == [read.id]
    assert await listed(status="broadcast") == [broadcast.id]
    assert await listed(user_id="u3") == []
    # Pages: newest first, before a seq.
    assert await listed(limit=2) == everything[:2]
    assert await listed(before_seq=broadcast.seq, limit=2) == [read.id, delivered.id]
    assert await listed(before_seq=queued.seq) == []
    (full,) = await store.list_notifications(user_id="u2", type=None, status=None, before_seq=None, limit=1)
    assert (full.seq, full.title, full.read_at) == (read.seq, "u2/lab_result", _ms(now))
    with pytest.raises(ValueError, match="unknown status"):
        await listed(status="lost")

    store_clock.advance(61)
    assert await listed() == everything[1:]
    assert await listed(status="queued") == [queued.id]


async def test_reads_are_counted_since_a_time(store: Any, store_clock: ManualClock) -> None:
    notes = await store.insert_notifications([_draft("u1"), _draft("u1"), _draft("u2")])
    start = store_clock.now()
    assert await store.count_read_since(start) == 0
    await _mark(store, notes[0].id, "read_at", start)
    await _mark(store, notes[2].id, "read_at", start + timedelta(seconds=30))
    assert await store.count_read_since(start) == 2
    assert await store.count_read_since(start + timedelta(seconds=1)) == 1
    assert await store.count_read_since(start + timedelta(seconds=31)) == 0
