"""The dashboard in a real browser (Debian's headless chromium), driven as staff would use it.

One browser for the module (starting chromium is the slow part); each test gets its own server,
database and browser context. Patients are real WebSocket clients over loopback.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from diagnoxix.keys import STORE

from .dashboard_support import CHROMIUM, LiveServer, browser_login, launch_chromium, start_server

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    # A developer box without chromium skips; CI (which installs it) must never skip silently.
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)",
    ),
]
# Live figures are pushed every second; allow a slow CI box a few pushes.
LIVE_TIMEOUT_MS = 8000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    live = await start_server(tmp_path)
    yield live
    await live.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab = await context.new_page()
    yield tab
    await context.close()


def _trap_script_execution(tab: Page, problems: list[str]) -> None:
    """Any alert/confirm dialog or page error means script ran that should not have."""
    tab.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))


async def _stat(tab: Page, name: str) -> Any:
    return tab.locator(f'[data-stat="{name}"]')


async def test_staff_watch_a_patient_connect_send_and_see_it_delivered(
    server: LiveServer, page: Page
) -> None:
    problems: list[str] = []
    _trap_script_execution(page, problems)
    await browser_login(page, server)
    connections = await _stat(page, "connections")
    await expect(connections).to_have_text("0")
    await expect(page.locator("[data-live-state]")).to_have_text("live", timeout=LIVE_TIMEOUT_MS)
    # A marker that a reload would wipe: the figure must change on this very page.
    await page.evaluate("window.__sameDocument = true")
    async with aiohttp.ClientSession() as http:
        patient = await http.ws_connect(f"{server.ws_url}?token={server.token('patient-42')}")
        await expect(connections).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
        await expect(await _stat(page, "users_online")).to_have_text("1", timeout=LIVE_TIMEOUT_MS)
        assert await page.evaluate("window.__sameDocument") is True
        # The presence feed shows the patient coming online, live.
        came = page.locator('[data-presence-user="patient-42"][data-online="true"]')
        await expect(came).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
        await patient.close()
        await expect(connections).to_have_text("0", timeout=LIVE_TIMEOUT_MS)
        went = page.locator('[data-presence-user="patient-42"][data-online="false"]')
        await expect(went).to_have_count(1, timeout=LIVE_TIMEOUT_MS)

    # Send from the form to a patient who is offline: stored, queued.
    evil_title = "<script>window.__xss = 1</script><img src=x onerror=alert(1)> Results ready"
    await page.get_by_role("link", name="Send").click()
    await page.get_by_label("User id").fill("patient-7")
    await page.get_by_label("Title").fill(evil_title)
    await page.get_by_label("Message").fill("Please log in to the portal.")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_url("**/dashboard/send?sent=*")
    sent_id = await page.locator("[data-sent-id]").inner_text()
    assert len(sent_id) == 36
    state = page.locator("[data-delivery-state]")
    await expect(state).to_have_attribute("data-delivery-state", "queued")

    # The test client, in a second tab, connects as patient-7: the queued notification arrives.
    client_tab = await page.context.new_page()
    _trap_script_execution(client_tab, problems)
    await client_tab.goto(server.url + "/dashboard/test-client")
    await client_tab.get_by_label("User id").fill("patient-7")
    await client_tab.get_by_role("button", name="Connect as this user").click()
    await expect(client_tab.locator("[data-client-state]")).to_have_text("connected")
    inbox = client_tab.locator("[data-inbox] li")
    await expect(inbox).to_have_count(1)
    await expect(inbox.first.locator(".n-title")).to_have_text(evil_title)  # as text, not markup
    # ...and the send page, untouched, learns live that it was delivered.
    await expect(state).to_have_attribute("data-delivery-state", "delivered", timeout=LIVE_TIMEOUT_MS)

    # A second send from the form arrives in the open test client live.
    await page.get_by_label("User id").fill("patient-7")
    await page.get_by_label("Title").fill("Second one")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_url("**/dashboard/send?sent=*")
    await expect(inbox).to_have_count(2)
    await expect(inbox.first.locator(".n-title")).to_have_text("Second one")
    await expect(page.locator("[data-delivery-state]")).to_have_attribute(
        "data-delivery-state", "delivered", timeout=LIVE_TIMEOUT_MS
    )

    # The notification list shows the hostile title as text too.
    await page.get_by_role("link", name="Notifications").click()
    await expect(page.locator("[data-title]").filter(has_text="Results ready")).to_have_text(evil_title)
    assert await page.evaluate("window.__xss") is None
    assert await client_tab.evaluate("window.__xss") is None
    assert problems == []


async def test_create_and_revoke_a_key_find_it_in_the_audit_log_then_log_out(
    server: LiveServer, page: Page
) -> None:
    await browser_login(page, server)
    # A second tab keeps the overview (and its live socket) open across the logout.
    overview = await page.context.new_page()
    await overview.goto(server.url + "/dashboard/")
    await expect(overview.locator("[data-live-state]")).to_have_text("live", timeout=LIVE_TIMEOUT_MS)

    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Name of the service using the key").fill("billing-service")
    await page.get_by_role("button", name="Create key").click()
    secret = await page.locator("[data-new-key]").input_value()
    assert secret.startswith("dxn_")
    key_id = secret.split("_")[1]
    async with aiohttp.ClientSession() as http:
        body = {"user_id": "patient-1", "title": "From billing"}
        sent = await http.post(
            server.url + "/v1/notifications", json=body, headers={"Authorization": f"Bearer {secret}"}
        )
        assert sent.status == 201
        # Shown once: the list never shows it again.
        await page.get_by_role("link", name="API keys").click()
        await expect(page.locator(f'tr[data-key="{key_id}"]')).to_contain_text("billing-service")
        assert secret not in await page.content()
        row = page.locator(f'tr[data-key="{key_id}"]')
        await row.get_by_role("button", name="Revoke").click()
        await expect(page.locator(f'tr[data-key="{key_id}"]')).to_contain_text("revoked")
        refused = await http.post(
            server.url + "/v1/notifications", json=body, headers={"Authorization": f"Bearer {secret}"}
        )
        assert refused.status == 401

    await page.get_by_role("link", name="Audit log").click()
    rows = page.locator("tr[data-audit-action]")
    for action, target in (("login", None), ("apikey.create", key_id), ("apikey.revoke", key_id)):
        entry = page.locator(f'tr[data-audit-action="{action}"]').first
        await expect(entry).to_contain_text("staff:alice")
        if target:
            await expect(entry).to_contain_text(target)
    assert await rows.count() >= 3

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/dashboard/login")
    # The other tab's live socket was closed with the session; it goes to the sign-in form.
    await overview.wait_for_url("**/dashboard/login", timeout=LIVE_TIMEOUT_MS)
    await page.goto(server.url + "/dashboard/keys")
    assert page.url == server.url + "/dashboard/login?next=/dashboard/keys"
    store = server.app[STORE]
    await store.flush()
    actions = [e["action"] for e in await store.audit_page(before_id=None, limit=20)]
    assert actions[0] == "logout"
