"""Headers on every response, and CORS only for the origins a clinic allows."""

from __future__ import annotations

from typing import Any

from .conftest import Service

PORTAL = "https://portal.clinic.example"


async def test_api_answers_are_not_sniffed_cached_or_framed(service: Service) -> None:
    await service.send("p1")
    for path, headers in [
        ("/v1/users/p1/notifications", service.auth()),
        ("/v1/users/p1/notifications", {}),  # a 401 too
        ("/v1/no-such-route", {}),
        ("/healthz", {}),
    ]:
        resp = await service.client.get(path, headers=headers)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], path
        assert resp.headers["X-Frame-Options"] == "DENY", path
        if path.startswith("/v1/"):
            assert resp.headers["Cache-Control"] == "no-store", path
    script = await service.client.get("/static/js/diagnoxix-notify.mjs")
    assert script.status == 200
    assert script.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_dashboard_keeps_its_own_policy(service: Service) -> None:
    page = await service.client.get("/dashboard/login")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]  # its own, not the API's


async def test_cors_is_off_unless_an_origin_is_allowed(service: Service) -> None:
    preflight = await service.client.options(
        "/v1/users/p1/notifications",
        headers={"Origin": PORTAL, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 403
    assert (await preflight.json())["error"]["code"] == "origin_not_allowed"
    resp = await service.client.get(
        "/v1/users/p1/notifications",
        headers={"Origin": PORTAL, "Authorization": f"Bearer {service.token('p1')}"},
    )
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert resp.headers["Vary"] == "Origin"


async def test_an_allowed_portal_may_call_the_api_with_a_users_token(make_service: Any) -> None:
    service: Service = await make_service(allowed_origins=(PORTAL,))
    await service.send("p1")
    preflight = await service.client.options(
        "/v1/users/p1/notifications",
        headers={
            "Origin": PORTAL,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status == 204
    # DELETE: a portal removes a push subscription (or a device) with the user's token.
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    resp = await service.client.get(
        "/v1/users/p1/notifications",
        headers={"Origin": PORTAL, "Authorization": f"Bearer {service.token('p1')}"},
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == PORTAL
    # The SDK module may be imported from the portal's pages.
    script = await service.client.get("/static/js/diagnoxix-notify.mjs", headers={"Origin": PORTAL})
    assert script.headers["Access-Control-Allow-Origin"] == PORTAL
    # Another origin still gets nothing it could read.
    other = await service.client.get(
        "/v1/users/p1/notifications",
        headers={"Origin": "https://evil.example", "Authorization": f"Bearer {service.token('p1')}"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    # The dashboard is never shared across origins.
    page = await service.client.get("/dashboard/login", headers={"Origin": PORTAL})
    assert "Access-Control-Allow-Origin" not in page.headers
