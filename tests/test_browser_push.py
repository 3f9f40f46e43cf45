"""The Web Push service worker in a real browser (Debian's Chromium, headless): it registers, and
a push delivered through the DevTools protocol (`ServiceWorker.deliverPushMessage`, the way the
browser hands a push service's message to the worker) shows the minimal notification; with the
user's credentials from the SDK it shows the notification's own words, fetched from the API, and
a click would open the notification's portal link."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import Browser, Page

from diagnoxix.keys import PUSH

from .conftest import Service
from .push_service import PushService, b64url_decode

MakeService = Callable[..., Awaitable[Service]]
GENERIC = "New message from your clinic"
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Portal</title></head><body>
<script src="/static/js/diagnoxix-notify.js"></script>
<script>
  window.ready = navigator.serviceWorker.register("/static/js/diagnoxix-sw.js", {scope: "/"})
    .then(() => navigator.serviceWorker.ready)
    .then((registration) => { window.registration = registration; return true; });
  window.shown = () => registration.getNotifications()
    .then((list) => list.map((n) => ({title: n.title, body: n.body, data: n.data})));
</script></body></html>"""


async def _portal(browser: Browser, svc: Service) -> tuple[Page, Any, str]:
    origin = str(svc.client.make_url("/")).rstrip("/")
    context = await browser.new_context()
    await context.grant_permissions(["notifications"], origin=origin)
    page = await context.new_page()
    await page.route(
        f"{origin}/portal.html", lambda route: route.fulfill(body=PAGE, content_type="text/html")
    )
    cdp = await context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated", lambda event: registrations.extend(event["registrations"])
    )
    await cdp.send("ServiceWorker.enable")
    await page.goto(f"{origin}/portal.html")
    assert await page.evaluate("window.ready") is True
    deadline = time.monotonic() + 10
    while not any(r["scopeURL"] == f"{origin}/" and not r["isDeleted"] for r in registrations):
        assert time.monotonic() < deadline, registrations
        await asyncio.sleep(0.05)
    registration_id = next(r["registrationId"] for r in registrations if r["scopeURL"] == f"{origin}/")

    async def push(payload: dict[str, Any]) -> None:
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": origin, "registrationId": registration_id, "data": json.dumps(payload)},
        )

    return page, push, origin


async def _shown(page: Page, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(shown := await page.evaluate("window.shown()")) < count:
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.1)
    return shown  # type: ignore[no-any-return]


async def test_without_credentials_the_worker_shows_the_minimal_notification(
    browser: Browser, make_service: MakeService
) -> None:
    svc = await make_service()
    note = await svc.send("ana", "HIV test result", message="Positive")
    page, push, origin = await _portal(browser, svc)
    await push({"id": note["id"], "title": GENERIC})
    (shown,) = await _shown(page, 1)
    assert shown["title"] == GENERIC
    assert shown["body"] == ""
    assert shown["data"] == {"id": note["id"], "url": f"{origin}/"}


async def test_with_the_users_token_the_worker_shows_the_notifications_words_and_its_link(
    browser: Browser, make_service: MakeService
) -> None:
    svc = await make_service()
    note = await svc.send(
        "ana", "Lab Result Ready", message="Your result is ready.", data={"url": "/results/42"}
    )
    page, push, origin = await _portal(browser, svc)
    await page.evaluate(
        "([token]) => DiagnoxixNotify.pushCredentials(registration, {token, userId: 'ana'})",
        [svc.token("ana")],
    )
    await asyncio.sleep(0.2)  # the worker stores them (postMessage is asynchronous)
    await push({"id": note["id"], "title": GENERIC})
    (shown,) = await _shown(page, 1)
    assert shown["title"] == "Lab Result Ready"
    assert shown["body"] == "Your result is ready."
    assert shown["data"]["url"] == f"{origin}/results/42"


async def test_enable_push_registers_the_browsers_subscription_and_pushes_reach_it(
    browser: Browser, make_service: MakeService
) -> None:
    """The SDK's enablePush in Chromium, end to end. Only the browser's own push service is stood
    in for (headless Chromium cannot reach Google's): `pushManager.subscribe` answers with a
    subscription at the test's push service, whose keys that service decrypts with."""
    pushes = await PushService.start()
    try:
        svc = await make_service(push_hosts=("127.0.0.1",), push_allow_loopback=True)
        pushes.vapid_key = svc.app[PUSH].public_key
        subscription = pushes.browser()
        page, _, _ = await _portal(browser, svc)
        await page.evaluate(
            """([sub]) => {
                PushManager.prototype.subscribe = function (options) {
                    window.subscribedWith = Array.from(new Uint8Array(options.applicationServerKey));
                    window.userVisibleOnly = options.userVisibleOnly;
                    return Promise.resolve({ toJSON: () => sub });
                };
            }""",
            [subscription.subscription()],
        )
        result = await page.evaluate(
            "([token]) => DiagnoxixNotify.enablePush({token, userId: 'ana'}).then((r) => r.subscription)",
            [svc.token("ana")],
        )
        assert result["endpoint_host"] == "127.0.0.1"
        assert bytes(await page.evaluate("window.subscribedWith")) == b64url_decode(pushes.vapid_key)
        assert await page.evaluate("window.userVisibleOnly") is True
        note = await svc.send("ana", "Hello")
        deadline = time.monotonic() + 10
        while not pushes.accepted():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert pushes.accepted()[0].payload == {"id": note["id"], "title": GENERIC}
        await page.evaluate(
            "([token, id]) => DiagnoxixNotify.disablePush({token, userId: 'ana', subscriptionId: id})",
            [svc.token("ana"), result["id"]],
        )
        listed = await svc.client.get("/v1/users/ana/push-subscriptions", headers=svc.auth())
        assert (await listed.json())["subscriptions"] == []
    finally:
        await pushes.close()
