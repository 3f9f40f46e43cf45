"""Links and actions in a real browser (Debian's Chromium, Playwright) against the real server:
the browser SDK in a patient portal on its own origin hands over `url` and `actions`, opens the
url when the notification is clicked (its own helper and a system notification's click), and
answers an action across origins with the user's token; the dashboard's test client shows a
notification's link and actions as links and labels, never markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Route, expect

from diagnoxix.delivery.actions import AnsweredAction
from diagnoxix.keys import ACTIONS

from .dashboard_support import LiveServer, browser_login, start_server
from .processes import free_port

PORTAL = "portal.example.org"
# The portal page is served on a loopback origin of its own (Chromium lets only a loopback page
# load our SDK from 127.0.0.1); its links go to the clinic's portal host.
PORTAL_PORT = free_port()
PORTAL_ORIGIN = f"http://127.0.0.1:{PORTAL_PORT}"
LINK = f"https://{PORTAL}/appointments/456"
ACTIONS_SENT = [
    {"label": "Confirm", "action": "confirm"},
    {"label": "Reschedule", "url": f"https://{PORTAL}/appointments/456/reschedule"},
]
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Patient portal</title></head>
<body><ul id="inbox"></ul>
<script src="{sdk}"></script>
<script>
  const params = new URLSearchParams(location.hash.slice(1));
  window.received = [];
  window.notify = DiagnoxixNotify.connect({{ url: params.get("ws"), token: params.get("token") }});
  notify.on("notification", (n) => {{
    received.push(n);
    const li = document.createElement("li");
    li.textContent = n.title;
    li.dataset.id = n.id;
    li.onclick = () => notify.openLink(n);
    document.getElementById("inbox").appendChild(li);
  }});
</script></body></html>
"""


async def _start_portal(server: LiveServer) -> web.AppRunner:
    """The clinic's patient portal: a page on its own loopback origin that embeds the SDK."""

    async def portal(_: web.Request) -> web.Response:
        sdk = f"{server.url}/static/js/diagnoxix-notify.js"
        return web.Response(text=PAGE.format(sdk=sdk), content_type="text/html")

    app = web.Application()
    app.router.add_get("/portal", portal)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORTAL_PORT).start()
    return runner


async def _route_links(context: Any) -> None:
    """The pages the portal's links open, answered by Playwright (no network)."""

    async def fulfil(route: Route) -> None:
        await route.fulfill(content_type="text/html", body="<title>portal page</title>")

    await context.route(f"https://{PORTAL}/**", fulfil)


async def _send(server: LiveServer, key: str, user_id: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{server.url}/v1/notifications",
            json={"user_id": user_id, "title": "Appointment", "url": LINK, "actions": ACTIONS_SENT},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert resp.status == 201, await resp.text()
        return (await resp.json())["notification"]  # type: ignore[no-any-return]


async def test_the_sdk_opens_the_url_on_a_click_and_answers_an_action(
    browser: Browser, tmp_path: Path
) -> None:
    server = await start_server(tmp_path, allowed_origins=(PORTAL_ORIGIN,), link_hosts=(PORTAL,))
    heard: list[AnsweredAction] = []
    server.app[ACTIONS].add_listener(heard.append)
    portal = await _start_portal(server)
    context = await browser.new_context()
    try:
        # The Notifications API needs a secure context and a person's consent, which an http test
        # origin cannot have: a stand-in with the same shape, allowed.
        await context.add_init_script(
            "window.Notification = class { constructor(title, options) { this.title = title;"
            " this.options = options; } close() {} }; window.Notification.permission = 'granted';"
        )
        await _route_links(context)
        page = await context.new_page()
        await page.goto(f"{PORTAL_ORIGIN}/portal#ws={server.ws_url}&token={server.token('patient-1')}")
        await page.wait_for_function("notify.state === 'open'")
        sent = await _send(server, await server.api_key(), "patient-1")
        await expect(page.locator("#inbox li")).to_have_count(1)
        received = await page.evaluate("received[0]")
        assert received["url"] == LINK
        assert received["actions"] == ACTIONS_SENT

        # A click on the notification opens its url in a new tab, without an opener.
        async with context.expect_page() as opened:
            await page.locator("#inbox li").click()
        tab = await opened.value
        await tab.wait_for_load_state()
        assert tab.url == LINK
        assert await tab.evaluate("window.opener") is None
        await tab.close()

        # A system notification's click does the same.
        async with context.expect_page() as opened:
            shown = await page.evaluate(
                "(() => { const s = DiagnoxixNotify.showNotification(received[0]);"
                " if (s) s.onclick(); return !!s; })()"
            )
            assert shown, "the Notifications API was not available"
        tab = await opened.value
        await tab.wait_for_load_state()
        assert tab.url == LINK
        # A link that is not a web link is never followed.
        assert await page.evaluate("DiagnoxixNotify.openLink({url: 'javascript:alert(1)'})") is False

        # The user answers across origins with their token; the sender's listener hears it once.
        answer = await page.evaluate(f"notify.answer({sent['id']!r}, 'confirm')")
        assert answer["recorded"] is True
        assert answer["action"] == "confirm"
        again = await page.evaluate(
            f"notify.answer({sent['id']!r}, 'decline').then(() => 'accepted', (e) => e.code)"
        )
        assert again == "action_not_found"  # decline is not one of this notification's actions
        assert [h.action for h in heard] == ["confirm"]
    finally:
        await context.close()
        await portal.cleanup()
        await server.close()


async def test_the_test_client_shows_a_notifications_link_and_actions(
    browser: Browser, tmp_path: Path
) -> None:
    server = await start_server(tmp_path, link_hosts=(PORTAL,))
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await browser_login(page, server)
        await page.goto(server.url + "/dashboard/test-client")
        await page.get_by_label("User id").fill("patient-2")
        await page.get_by_role("button", name="Connect as this user").click()
        await expect(page.locator("[data-client-state]")).to_have_text("connected")
        await _send(server, await server.api_key(), "patient-2")
        item = page.locator("[data-inbox] li")
        await expect(item).to_have_count(1)
        link = item.locator("a.n-url")
        await expect(link).to_have_attribute("href", LINK)
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
        await expect(item.locator("a.n-action")).to_have_attribute("href", ACTIONS_SENT[1]["url"])
        await expect(item.locator("a.n-action")).to_have_text("Reschedule")
        await expect(item.locator("[data-action=confirm]")).to_have_text("Confirm (answer: confirm)")
    finally:
        await context.close()
        await server.close()
