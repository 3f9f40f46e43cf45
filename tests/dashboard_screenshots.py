"""`make screenshots`: PNGs of every dashboard page under docs/screenshots/, from a real server
with a little realistic traffic, in Debian's headless chromium.

Run from the repository root: `python -m tests.dashboard_screenshots`.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

from diagnoxix.keys import SERVICE

from .dashboard_support import browser_login, launch_chromium, start_server

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
LAPTOP = {"width": 1280, "height": 860}
TABLET = {"width": 820, "height": 1180}


async def _traffic(server: object, http: aiohttp.ClientSession) -> list[aiohttp.ClientWebSocketResponse]:
    """Some patients online and a minute's worth of sends, so the pages have something to show."""
    app = server.app  # type: ignore[attr-defined]
    service = app[SERVICE]
    sockets = []
    for user in ("patient-1042", "patient-1042", "patient-2210", "dr.osei"):
        sockets.append(await http.ws_connect(f"{server.ws_url}?token={server.token(user)}"))  # type: ignore[attr-defined]
    await service.send_appointment_notification("patient-1042", "appt-88", "confirmed")
    await service.send_lab_result_notification("patient-2210", "Complete Blood Count", abnormal=False)
    await service.send_lab_result_notification("patient-3301", "Lipid panel", abnormal=True)
    await service.send_ai_analysis_notification("patient-1042", "symptom_analysis", "an-5531")
    await service.create_and_send_notification(
        "patient-3301", "CUSTOM_TYPE", "<script>alert('x')</script> shown as text", "Escaped, never run."
    )
    await service.broadcast_system_notification("Maintenance tonight", "The portal is down 22:00-22:30.")
    for i in range(8):
        await service.create_and_send_notification(
            "patient-2210", "reminder", f"Reminder {i}", "Take your meds"
        )
        await asyncio.sleep(0.4)
    return sockets


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = await start_server(Path(tmp))
        http = aiohttp.ClientSession()
        try:
            await server.api_key()
            sockets = await _traffic(server, http)
            async with async_playwright() as pw:
                browser = await launch_chromium(pw)
                context = await browser.new_context(viewport=LAPTOP)
                page = await context.new_page()
                await page.goto(server.url + "/dashboard/login")
                await page.screenshot(path=str(OUT / "login.png"))
                await browser_login(page, server)
                await page.wait_for_timeout(2500)  # a few live pushes for the chart
                await page.screenshot(path=str(OUT / "overview.png"), full_page=True)
                await page.goto(server.url + "/dashboard/send")
                await page.get_by_label("User id").fill("patient-4410")
                await page.get_by_label("Title").fill("Your prescription is ready")
                await page.get_by_role("button", name="Send").click()
                await page.wait_for_url("**/dashboard/send?sent=*")
                await page.screenshot(path=str(OUT / "send.png"), full_page=True)
                for name, path in (
                    ("notifications", "/dashboard/notifications"),
                    ("users", "/dashboard/users"),
                    ("user", "/dashboard/users/patient-1042"),
                    ("keys", "/dashboard/keys"),
                    ("audit", "/dashboard/audit"),
                ):
                    await page.goto(server.url + path)
                    await page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                # A critical one's page: where it went (the socket, pushes, webhooks), its item.
                critical = await server.app[SERVICE].send_ai_analysis_notification(
                    "patient-1042", "ct_head_review", "an-7710", priority="critical"
                )
                await page.goto(server.url + f"/dashboard/notifications/{critical.id}")
                await page.screenshot(path=str(OUT / "notification.png"), full_page=True)
                await page.goto(server.url + "/dashboard/test-client")
                await page.get_by_label("User id").fill("patient-3301")
                await page.get_by_role("button", name="Connect as this user").click()
                await page.locator("[data-client-state][data-state=connected]").wait_for()
                await page.locator("[data-inbox] li").first.wait_for()
                await page.screenshot(path=str(OUT / "test-client.png"), full_page=True)
                tablet = await browser.new_context(viewport=TABLET)
                tab = await tablet.new_page()
                await browser_login(tab, server)
                await tab.wait_for_timeout(1500)
                await tab.screenshot(path=str(OUT / "overview-tablet.png"), full_page=True)
                await browser.close()
            for ws in sockets:
                await ws.close()
        finally:
            await http.close()
            await server.close()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
