"""Users' channel preferences: what each channel may carry for whom and when, over the HTTP API
with the user's own token and a service's key, kept in the store across a restart, and the rule
the channels ask (`rules.preferences.allows`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from diagnoxix.config import Settings
from diagnoxix.keys import STORE
from diagnoxix.rules.preferences import Preferences, allows
from diagnoxix_client import NotifyClient, NotifyError

from .conftest import Service
from .dashboard_support import StaffClient, start_server
from .servers import start_app

PATH = "/v1/users/{}/preferences"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def put(service: Service, user: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return await service.client.put(
        PATH.format(user), json=body, headers=headers or bearer(service.token(user))
    )


BERLIN_NIGHTS = Preferences(time_zone="Europe/Berlin", quiet_hours=(22 * 60, 7 * 60))


@pytest.mark.parametrize(
    ("prefs", "channel", "category", "priority", "at", "expected"),
    [
        # No record: every channel, any hour.
        (None, "push", "appointment_confirmed", "normal", datetime(2026, 1, 5, 3, 0, tzinfo=UTC), True),
        # 21:30 UTC in January is 22:30 in Berlin: quiet. 20:30 UTC is 21:30 there: not.
        (BERLIN_NIGHTS, "push", "lab_result", "high", datetime(2026, 1, 5, 21, 30, tzinfo=UTC), False),
        (BERLIN_NIGHTS, "push", "lab_result", "high", datetime(2026, 1, 5, 20, 30, tzinfo=UTC), True),
        # Over midnight: 05:59 UTC is 06:59 in Berlin (quiet), 06:00 UTC is 07:00 (not).
        (BERLIN_NIGHTS, "webhook", "x", "low", datetime(2026, 1, 6, 5, 59, tzinfo=UTC), False),
        (BERLIN_NIGHTS, "webhook", "x", "low", datetime(2026, 1, 6, 6, 0, tzinfo=UTC), True),
        # In summer Berlin is UTC+2: 20:30 UTC is 22:30 there.
        (BERLIN_NIGHTS, "push", "x", "normal", datetime(2026, 7, 6, 20, 30, tzinfo=UTC), False),
        # Critical goes at any hour.
        (BERLIN_NIGHTS, "push", "lab_result", "critical", datetime(2026, 1, 5, 23, 0, tzinfo=UTC), True),
        # A category switched off, the rest on; `*` for the categories not named.
        (Preferences(channels={"marketing": {"push": False}}), "push", "marketing", "low", None, False),
        (Preferences(channels={"marketing": {"push": False}}), "webhook", "marketing", "low", None, True),
        (Preferences(channels={"marketing": {"push": False}}), "push", "lab_result", "low", None, True),
        (
            Preferences(channels={"*": {"push": False}, "lab_result": {"push": True}}),
            "push",
            "lab_result",
            "low",
            None,
            True,
        ),
        (
            Preferences(channels={"*": {"push": False}, "lab_result": {"push": True}}),
            "push",
            "other",
            "low",
            None,
            False,
        ),
        # A critical category goes whatever the record says.
        (Preferences(channels={"*": {"push": False}}), "push", "sepsis_alert", "normal", None, True),
    ],
)
def test_what_a_channel_may_carry(
    prefs: Preferences | None, channel: str, category: str, priority: str, at: datetime | None, expected: bool
) -> None:
    when = at or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert (
        allows(
            prefs,
            channel=channel,
            category=category,
            priority=priority,
            at=when,
            critical_categories={"sepsis_alert"},
        )
        is expected
    )


async def test_a_user_keeps_their_own_preferences_and_nobody_else_s(service: Service) -> None:
    user = "patient-1"
    resp = await service.client.get(PATH.format(user), headers=bearer(service.token(user)))
    assert resp.status == 200
    assert await resp.json() == {
        "time_zone": "UTC",
        "quiet_hours": None,
        "channels": {},
        "critical_categories": [],
    }
    chosen = {
        "time_zone": "Europe/Berlin",
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "channels": {"*": {"push": True, "webhook": False}, "appointment_reminder": {"push": False}},
    }
    resp = await put(service, user, chosen)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {**chosen, "critical_categories": []}
    # Read back with the service's key: the same.
    resp = await service.client.get(PATH.format(user), headers=service.auth())
    assert (await resp.json())["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    # Another patient's token neither reads nor writes them.
    other = bearer(service.token("patient-2"))
    assert (await service.client.get(PATH.format(user), headers=other)).status == 403
    assert (await put(service, user, {"channels": {}}, headers=other)).status == 403
    assert (await service.client.delete(PATH.format(user), headers=other)).status == 403
    assert (await service.client.get(PATH.format(user))).status == 401
    resp = await service.client.get(PATH.format(user), headers=bearer(service.token(user)))
    assert (await resp.json())["time_zone"] == "Europe/Berlin"
    # Back to the defaults.
    resp = await service.client.delete(PATH.format(user), headers=bearer(service.token(user)))
    assert resp.status == 200
    assert (await resp.json())["channels"] == {}
    resp = await service.client.get(PATH.format(user), headers=service.auth())
    assert (await resp.json())["quiet_hours"] is None
    # Audited by who did it, without the choices themselves.
    store = service.app[STORE]
    await store.flush()
    entries = [e for e in await store.audit_entries(limit=20) if e["action"].startswith("preferences.")]
    assert [(e["actor"], e["action"], e["target"]) for e in reversed(entries)] == [
        (f"user:{user}", "preferences.update", user),
        (f"user:{user}", "preferences.reset", user),
    ]
    assert "Europe/Berlin" not in str(entries)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"time_zone": "../../../etc/passwd"}, "time_zone"),
        ({"time_zone": ["Europe/Berlin"]}, "time_zone"),
        ({"quiet_hours": {"start": "24:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "22:00", "end": "7:00"}}, "quiet_hours.end"),
        ({"quiet_hours": "22-07"}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "days": 5}}, "quiet_hours.days"),
        ({"channels": {"lab_result": {"sms": True}}}, "channels.lab_result.sms"),
        ({"channels": {"lab_result": {"push": "no"}}}, "channels.lab_result.push"),
        ({"channels": {"lab_result": {}}}, "channels.lab_result"),
        ({"channels": {"bad type!": {"push": False}}}, "channels"),
        ({"channels": {f"t{i}": {"push": False} for i in range(51)}}, "channels"),
        ({"channels": []}, "channels"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_a_bad_body_is_refused_with_the_field_to_fix(service: Service, body: Any, field: str) -> None:
    user = "patient-3"
    assert (await put(service, user, {"time_zone": "Asia/Tokyo"})).status == 200
    resp = await put(service, user, body)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "validation_failed"
    assert field in error["details"], error
    # What was stored stays.
    resp = await service.client.get(PATH.format(user), headers=service.auth())
    assert (await resp.json())["time_zone"] == "Asia/Tokyo"


async def test_a_critical_category_cannot_be_switched_off(
    make_service: Callable[..., Awaitable[Service]],
) -> None:
    service = await make_service(critical_categories=("sepsis_alert",))
    resp = await put(service, "patient-4", {"channels": {"sepsis_alert": {"push": False}}})
    assert resp.status == 422
    assert "channels.sepsis_alert.push" in (await resp.json())["error"]["details"]
    resp = await put(service, "patient-4", {"channels": {"*": {"push": False}}})
    assert resp.status == 200
    assert (await resp.json())["critical_categories"] == ["sepsis_alert"]


async def test_preferences_are_kept_across_a_restart(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    chosen = Preferences(
        time_zone="America/Sao_Paulo", quiet_hours=(23 * 60, 6 * 60), channels={"x": {"push": False}}
    )
    server = await start_app(settings)
    try:
        await server.app[STORE].put_preferences("patient-5", chosen)
    finally:
        await server.close()
    server = await start_app(settings)
    try:
        assert await server.app[STORE].get_preferences("patient-5") == chosen
        assert await server.app[STORE].get_preferences("patient-6") is None
    finally:
        await server.close()


async def test_the_python_client_sets_reads_and_resets_them(service: Service) -> None:
    base = str(service.client.make_url("")).rstrip("/")
    async with NotifyClient(base, service.api_key) as client:
        chosen = await client.set_preferences(
            "patient-7",
            time_zone="Europe/Madrid",
            quiet_hours=("21:30", "06:15"),
            channels={"appointment_reminder": {"webhook": False}},
        )
        assert chosen["quiet_hours"] == {"start": "21:30", "end": "06:15"}
        assert (await client.preferences("patient-7"))["channels"] == {
            "appointment_reminder": {"webhook": False}
        }
        with pytest.raises(NotifyError) as refused:
            await client.set_preferences("patient-7", time_zone="Europe/Atlantis")
        assert refused.value.status == 422
        assert (await client.reset_preferences("patient-7"))["time_zone"] == "UTC"
        assert (await client.preferences("patient-7"))["quiet_hours"] is None


async def test_staff_see_a_users_choices_on_their_page(tmp_path: Path) -> None:
    server = await start_server(tmp_path)
    staff = StaffClient(server)
    try:
        assert (await staff.login()).status == 303
        page = await (await staff.get("/dashboard/users/patient-8")).text()
        assert "None chosen: every channel, at any hour." in page
        await server.app[STORE].put_preferences(
            "patient-8",
            Preferences(
                time_zone="Europe/Berlin", quiet_hours=(22 * 60, 7 * 60), channels={"x": {"push": False}}
            ),
        )
        page = await (await staff.get("/dashboard/users/patient-8")).text()
        assert "Europe/Berlin" in page
        assert "22:00 to 07:00" in page
        assert 'data-category="x"><code>x</code>: push off' in page
    finally:
        await staff.close()
        await server.close()
