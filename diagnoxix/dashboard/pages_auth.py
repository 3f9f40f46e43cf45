"""Sign-in and sign-out. Every attempt, good or bad, lands in the audit log."""

from __future__ import annotations

import logging

from aiohttp import web

from diagnoxix.dashboard.accounts import MAX_PASSWORD_CHARS, USERNAME_PATTERN
from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.security import csrf_token
from diagnoxix.dashboard.sessions import (
    checked_form,
    current_staff,
    end_session,
    require_staff,
    start_session,
)
from diagnoxix.dashboard.state import DASHBOARD
from diagnoxix.keys import FORWARDING, STORE

log = logging.getLogger("diagnoxix.dashboard")

# Longer names are refused before they reach the throttle table or the audit log.
MAX_USERNAME_CHARS = 64


def _safe_next(target: str | None) -> str:
    """Only our own dashboard paths: never an open redirect to another site.

    Printable only: a control character (`?next=%0d%0a...`, NUL) is no path of ours, and the
    redirect would quietly drop or escape it.
    """
    if (
        target
        and target.startswith("/dashboard/")
        and "//" not in target
        and "\\" not in target
        and target.isprintable()
    ):
        return target
    return "/dashboard/"


async def login_page(request: web.Request) -> web.StreamResponse:
    if await current_staff(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return await render(
        request, "login.html", {"next": _safe_next(request.query.get("next")), "username": ""}, staff=None
    )


async def login(request: web.Request) -> web.StreamResponse:
    form = await checked_form(request, None)
    state, store = request.config_dict[DASHBOARD], request.config_dict[STORE]
    username = form.get("username", "").strip()[:MAX_USERNAME_CHARS]
    password = form.get("password", "")[:MAX_PASSWORD_CHARS]
    target = _safe_next(form.get("next"))

    async def again(status: int, error: str, headers: dict[str, str] | None = None) -> web.Response:
        context = {"next": target, "username": username, "error": error}
        return await render(request, "login.html", context, staff=None, status=status, headers=headers)

    if not username or not password:
        return await again(400, "Enter your username and password.")
    account = await store.find_staff_account(username) if USERNAME_PATTERN.match(username) else None
    # People type passwords into the username box: a name that is no account is never written
    # down (log, audit, throttle table); the throttle counts a keyed hash of whatever was typed.
    actor = f"staff:{account.username}" if account else "staff:(unknown account)"
    # Keyed hashes: neither what was typed nor the address is written down.
    address = request.config_dict[FORWARDING].address(request)
    account_key = "login:" + csrf_token(state.csrf_key, f"throttle:{username}|{address}")
    address_key = "login-from:" + csrf_token(state.csrf_key, f"throttle-address:{address}")
    # Checked before the password: while locked, even the right password is refused here.
    if await state.throttle.is_locked(store, account_key, address_key):
        store.record_audit(actor, "login.throttled", None)
        log.warning("dashboard.login_throttled", extra={"account": actor})
        retry = state.throttle.retry_after_seconds
        return await again(
            429,
            f"Too many failed sign-ins from here. Try again in {retry // 60} minutes.",
            {"Retry-After": str(retry)},
        )
    valid = await state.passwords.verify(account.password_hash if account else None, password)
    if account is None or account.disabled_at is not None or not valid:
        await store.record_login_failure(account_key)
        await store.record_login_failure(address_key)
        store.record_audit(actor, "login.failed", None)
        log.info("dashboard.login_failed", extra={"account": actor})
        return await again(401, "The username or password is not right.")
    await store.clear_login_failures(account_key)
    await start_session(request, username)
    store.record_audit(f"staff:{username}", "login", None)
    log.info("dashboard.login", extra={"username": username})
    raise web.HTTPSeeOther(target)


async def logout(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    await checked_form(request, staff)
    await end_session(request, staff)
    request.config_dict[STORE].record_audit(staff.actor, "logout", None)
    log.info("dashboard.logout", extra={"username": staff.username})
    raise web.HTTPSeeOther("/dashboard/login")
