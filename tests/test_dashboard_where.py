"""The dashboard's "Where it went" per notification: the socket (delivered, read, acknowledged), and
each webhook delivery of an event naming it with what the endpoint answered (its host only, never
its URL's path or query). A real server, real webhook receivers on loopback, a staff session."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from diagnoxix.delivery.webhooks import new_webhook_secret
from diagnoxix.keys import STORE
from diagnoxix.rules.webhooks import WebhookRule

from .dashboard_support import LiveServer, StaffClient, start_server
from .webhook_receiver import Receiver

SECRET_QUERY = "token=do-not-show-me"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = await start_server(
        tmp_path,
        webhook_allow_http_loopback=True,
        webhook_rules=(WebhookRule(types=("lab_critical",)),),
    )
    yield live
    await live.close()


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _rows(page: str, channel: str) -> list[str]:
    marker = f'<tr data-route="{channel}">'
    return [part.split("</tr>", 1)[0] for part in page.split(marker)[1:]]


async def test_a_notifications_page_shows_where_it_went_and_what_each_channel_answered(
    server: LiveServer,
) -> None:
    good = await Receiver(new_webhook_secret()).start("/hooks/pager")
    bad = await Receiver(new_webhook_secret(), answer=500).start("/hooks/sms")
    staff = StaffClient(server)
    http = aiohttp.ClientSession()
    try:
        store = server.app[STORE]
        for receiver in (good, bad):
            url = f"{receiver.url}?{SECRET_QUERY}"
            await store.create_webhook_endpoint(url, receiver.secret, ["notification.created"], "x", "t")
        key = await server.api_key()
        auth = {"Authorization": f"Bearer {key}"}
        body = {"user_id": "dr-lee", "type": "lab_critical", "title": "K 6.8", "message": "Call the lab"}
        resp = await http.post(
            server.url + "/v1/notifications", json={**body, "priority": "critical"}, headers=auth
        )
        assert resp.status == 201, await resp.text()
        nid = (await resp.json())["notification"]["id"]
        await good.wait_for(1)
        await bad.wait_for(1)

        async def answered() -> bool:
            found = (await store.webhook_deliveries_of([nid])).get(nid, [])
            return sorted(j.state for j in found) == ["done", "pending"] and all(
                j.state == "done" or "last_error" in j.payload for j in found
            )

        await _until(answered)
        assert (await staff.login()).status == 303
        # Reachable from the notifications list.
        listing = await (await staff.get("/dashboard/notifications")).text()
        assert f'href="/dashboard/notifications/{nid}"' in listing
        page = await (await staff.get(f"/dashboard/notifications/{nid}")).text()
        assert "data-where-it-went" in page
        (socket,) = _rows(page, "socket")
        assert "dr-lee" in socket
        assert "not yet; not acknowledged" in socket
        webhooks = _rows(page, "webhook")
        assert len(webhooks) == 2
        pager = next(r for r in webhooks if "notification.created: 2xx" in r)
        sms = next(r for r in webhooks if "HTTP 500" in r)
        assert f"127.0.0.1:{urlsplit(good.url).port}" in pager
        assert "delivered" in pager
        assert f"127.0.0.1:{urlsplit(bad.url).port}" in sms
        assert "pending" in sms
        # Never a URL's secret parts.
        assert "do-not-show-me" not in page
        assert "/hooks/" not in page
        # Acknowledged on behalf: the socket row says who.
        resp = await http.post(
            server.url + f"/v1/notifications/{nid}/acknowledgement", json={"reason": "called"}, headers=auth
        )
        assert resp.status == 200, await resp.text()
        page = await (await staff.get(f"/dashboard/notifications/{nid}")).text()
        (socket,) = _rows(page, "socket")
        assert "acknowledged by apikey:" in socket
        assert "on behalf via http" in socket
        # An unknown or malformed id is a 404, not an error.
        assert (await staff.get("/dashboard/notifications/" + "0" * 32)).status == 404
        assert (await staff.get("/dashboard/notifications/nope")).status == 404
    finally:
        await http.close()
        await staff.close()
        await good.close()
        await bad.close()


async def test_a_delivered_and_read_notification_says_so_on_the_socket_row(server: LiveServer) -> None:
    staff = StaffClient(server)
    http = aiohttp.ClientSession()
    try:
        key = await server.api_key()
        auth = {"Authorization": f"Bearer {key}"}
        body = {"user_id": "p-1", "type": "note", "title": "Hello", "message": "m"}
        resp = await http.post(server.url + "/v1/notifications", json=body, headers=auth)
        nid = (await resp.json())["notification"]["id"]
        ws = await http.ws_connect(
            server.ws_url + f"?token={server.token('p-1')}&since=0", protocols=("diagnoxix.v1",)
        )
        async with asyncio.timeout(5):
            while True:
                frame: dict[str, Any] = json.loads((await ws.receive()).data)
                if frame.get("id") == nid:
                    break
        await ws.send_json({"type": "ack", "id": nid})
        await ws.send_json({"type": "read", "ids": [nid]})

        async def read() -> bool:
            found = await server.app[STORE].get_notifications([nid])
            return found[0].read_at is not None

        await _until(read)
        assert (await staff.login()).status == 303
        page = await (await staff.get(f"/dashboard/notifications/{nid}")).text()
        (socket,) = _rows(page, "socket")
        assert ">read<" in socket
        assert _rows(page, "webhook") == []
        await ws.close()
    finally:
        await http.close()
        await staff.close()
