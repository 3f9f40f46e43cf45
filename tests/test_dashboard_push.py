"""Web Push on the dashboard: a user's page lists their push subscriptions by the push service's
host (never the endpoint, a secret) with Delete for admins, and whether each notification shown
went out by push and what the push service answered."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from diagnoxix.keys import PUSH, STORE

from .dashboard_support import ADMIN, LiveServer, StaffClient, start_server
from .push_service import PushService


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = await start_server(tmp_path, push_hosts=("127.0.0.1",), push_allow_loopback=True)
    yield live
    await live.close()


async def test_the_users_page_shows_subscriptions_and_pushes_and_an_admin_deletes_one(
    server: LiveServer, pushes: PushService
) -> None:
    pushes.vapid_key = server.app[PUSH].public_key
    browser = pushes.browser(410)
    auth = {"Authorization": f"Bearer {await server.api_key()}"}
    async with aiohttp.ClientSession(server.url, headers=auth) as http:
        kept = await (
            await http.post("/v1/users/pat-1/push-subscriptions", json=pushes.browser().subscription())
        ).json()
        gone = await (
            await http.post("/v1/users/pat-1/push-subscriptions", json=browser.subscription())
        ).json()
        sent = await (await http.post("/v1/notifications", json={"user_id": "pat-1", "title": "Hi"})).json()
    nid = sent["notification"]["id"]
    deadline = time.monotonic() + 10
    while len((await server.app[STORE].push_attempts([nid])).get(nid, [])) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    staff = StaffClient(server)
    try:
        assert (await staff.login()).status == 303
        page = await (await staff.get("/dashboard/users/pat-1")).text()
        assert f'data-push-subscription="{kept["subscription"]["id"]}"' in page
        assert f'data-push-subscription="{gone["subscription"]["id"]}"' not in page  # 410: removed
        assert browser.endpoint not in page  # the endpoint is a secret
        assert "/push/" not in page
        assert page.count(f'data-push="{nid}"') == 2
        answers = re.findall(r"<td>(\d+)</td>\s*<td>(sent|gone)</td>", page)
        assert sorted(answers) == [("201", "sent"), ("410", "gone")]
        path = f"/dashboard/users/pat-1/push-subscriptions/{kept['subscription']['id']}/delete"
        assert (await staff.post(path, {"csrf_token": "0" * 64})).status == 403
        form = await staff.csrf("/dashboard/users/pat-1")
        resp = await staff.post(path, {"csrf_token": form})
        assert resp.status == 303
        page = await (await staff.get(resp.headers["Location"])).text()
        assert "No push subscriptions." in page
    finally:
        await staff.close()
    await server.app[STORE].flush()
    entries = await server.app[STORE].audit_page(before_id=None, limit=20)
    (deleted,) = [e for e in entries if e["action"] == "push.unsubscribed"]
    assert deleted["actor"] == f"staff:{ADMIN}"
