"""The store contract, devices and preferences: the same tests on SQLite and PostgreSQL
(`store_backends.store`). A device is one minted token, listed while alive, revoked once; the
revoked ones are loaded at start until they can never be accepted again. A user's preferences
are replaced whole and deleted back to the defaults. Time is moved with the store's ManualClock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from diagnoxix.clock import ManualClock
from diagnoxix.rules.preferences import Preferences
from diagnoxix.store.postgres.store import DEVICE_EXPIRY_MARGIN_SECONDS
from diagnoxix.store.sqlite.devices import EXPIRY_MARGIN_SECONDS

HOUR = timedelta(hours=1)


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_both_stores_keep_a_revoked_token_as_long() -> None:
    assert DEVICE_EXPIRY_MARGIN_SECONDS == EXPIRY_MARGIN_SECONDS


async def test_devices_are_listed_newest_first_while_alive_and_only_to_their_user(
    store: Any, store_clock: ManualClock
) -> None:
    now = store_clock.now()
    await store.record_device("t-old", "dora", now - timedelta(minutes=5), now + HOUR)
    await store.record_device("t-b", "dora", now, now + HOUR)
    await store.record_device("t-a", "dora", now, now + HOUR)
    await store.record_device("t-B", "dora", now, now + 2 * HOUR)
    await store.record_device("t-short", "dora", now, now + timedelta(seconds=30))
    await store.record_device("t-ed", "ed", now, now + HOUR)
    # Recorded again (a retried mint): nothing changes.
    await store.record_device("t-b", "dora", now + timedelta(minutes=1), now + 3 * HOUR)

    listed = await store.list_devices("dora", limit=10)
    # Newest first; the same moment by token id, byte by byte (upper case first), as SQLite orders.
    assert [d.token_id for d in listed] == ["t-B", "t-a", "t-b", "t-short", "t-old"]
    assert [d.token_id for d in await store.list_devices("dora", limit=2)] == ["t-B", "t-a"]
    b = listed[2]
    assert (b.user_id, b.created_at, b.expires_at) == ("dora", _ms(now), _ms(now + HOUR))
    assert (b.last_seen_at, b.user_agent, b.revoked_at) == (None, None, None)

    found = await store.find_device("dora", "t-a")
    assert found is not None
    assert found.token_id == "t-a"
    assert await store.find_device("ed", "t-a") is None  # another user's device is not found
    assert await store.find_device("dora", "t-none") is None

    store_clock.advance(31)
    assert "t-short" not in [d.token_id for d in await store.list_devices("dora", limit=10)]
    assert await store.find_device("dora", "t-short") is not None  # still there, not listed


async def test_a_use_records_last_seen_and_the_agent_and_a_token_minted_before_devices(
    store: Any, store_clock: ManualClock
) -> None:
    now = store_clock.now()
    await store.record_device("t1", "dora", now, now + HOUR)
    store.touch_device("t1", "dora", now, now + HOUR, "ClinicApp/2.1")
    # A token minted before devices were recorded: its first use records it.
    store.touch_device("t-legacy", "dora", now - HOUR, now + HOUR, None)
    await store.flush()
    device = await store.find_device("dora", "t1")
    assert device is not None
    assert (device.last_seen_at, device.user_agent) == (_ms(now), "ClinicApp/2.1")
    legacy = await store.find_device("dora", "t-legacy")
    assert legacy is not None
    assert (legacy.created_at, legacy.last_seen_at, legacy.user_agent) == (_ms(now - HOUR), _ms(now), None)

    store_clock.advance(120)
    store.touch_device("t1", "dora", now, now + HOUR, None)  # no agent this time: the old one stays
    store.touch_device("t1", "mallory", now, now + 9 * HOUR, "Evil/1.0")  # not hers: nothing changes
    await store.flush()
    device = await store.find_device("dora", "t1")
    assert device is not None
    assert (device.last_seen_at, device.user_agent) == (_ms(store_clock.now()), "ClinicApp/2.1")
    assert device.expires_at == _ms(now + HOUR)
    assert await store.find_device("mallory", "t1") is None


async def test_a_device_is_revoked_once_and_revoke_all_takes_only_live_ones(
    store: Any, store_clock: ManualClock
) -> None:
    now = store_clock.now()
    for token_id, ttl in (("t1", HOUR), ("t2", HOUR), ("t3", 2 * HOUR), ("t-short", timedelta(seconds=10))):
        await store.record_device(token_id, "dora", now, now + ttl)
    await store.record_device("t-ed", "ed", now, now + HOUR)

    assert await store.revoke_devices("dora", "t1") == [("t1", _ms(now + HOUR))]
    assert await store.revoke_devices("dora", "t1") == []  # already revoked
    assert await store.revoke_devices("dora", "t-ed") == []  # not hers
    assert await store.revoke_devices("dora", "t-none") == []
    device = await store.find_device("dora", "t1")
    assert device is not None
    assert device.revoked_at == _ms(now)

    store_clock.advance(11)  # t-short has expired: nothing to revoke there
    revoked = await store.revoke_devices("dora", None)
    assert sorted(revoked) == [("t2", _ms(now + HOUR)), ("t3", _ms(now + 2 * HOUR))]
    assert await store.revoke_devices("dora", None) == []
    ed = await store.find_device("ed", "t-ed")
    assert ed is not None
    assert ed.revoked_at is None


async def test_revoking_all_finds_a_device_whose_first_use_is_not_committed_yet(
    store: Any, store_clock: ManualClock
) -> None:
    """A device may be recorded only by a write nobody waits for, at its first connection: a
    "revoke all" right after must still find it, or its token could connect again."""
    now = store_clock.now()
    tokens = [f"t-first-{i:03d}" for i in range(200)]
    for token_id in tokens:
        store.touch_device(token_id, "olga", now, now + HOUR, "phone")
    revoked = await store.revoke_devices("olga", None)
    assert sorted(revoked) == [(token_id, _ms(now + HOUR)) for token_id in tokens]


async def test_revoked_tokens_are_kept_until_they_can_never_be_accepted(
    store: Any, store_clock: ManualClock
) -> None:
    now = store_clock.now()
    await store.record_device("t-long", "dora", now, now + HOUR)
    await store.record_device("t-short", "dora", now, now + timedelta(seconds=10))
    await store.record_device("t-live", "dora", now, now + HOUR)
    await store.revoke_devices("dora", "t-long")
    await store.revoke_devices("dora", "t-short")
    assert sorted(await store.revoked_tokens()) == [
        ("t-long", _ms(now + HOUR)),
        ("t-short", _ms(now + timedelta(seconds=10))),
    ]
    # Expired, but within the leeway a token is checked with: still refused.
    store_clock.advance(10 + EXPIRY_MARGIN_SECONDS - 1)
    assert sorted(t for t, _ in await store.revoked_tokens()) == ["t-long", "t-short"]
    store_clock.advance(2)
    assert [t for t, _ in await store.revoked_tokens()] == ["t-long"]


async def test_preferences_are_replaced_whole_and_deleted_back_to_the_defaults(store: Any) -> None:
    assert await store.get_preferences("u1") is None
    chosen = Preferences(
        time_zone="Europe/Berlin",
        quiet_hours=(22 * 60, 7 * 60),
        channels={"*": {"push": True, "webhook": False}, "appointment_reminder": {"push": False}},
    )
    await store.put_preferences("u1", chosen)
    assert await store.get_preferences("u1") == chosen
    assert await store.get_preferences("u2") is None

    await store.put_preferences("u1", Preferences(channels={"lab_result": {"webhook": False}}))
    assert await store.get_preferences("u1") == Preferences(channels={"lab_result": {"webhook": False}})
    await store.put_preferences("u2", chosen)

    assert await store.delete_preferences("u1") is True
    assert await store.delete_preferences("u1") is False
    assert await store.get_preferences("u1") is None
    assert await store.get_preferences("u2") == chosen
