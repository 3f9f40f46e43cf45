"""Staff sign-in sessions: an encrypted cookie that names a server-side session record.

The cookie (aiohttp-session's EncryptedCookieStorage, key derived from the server secret) only
carries a random session id. The record in `staff_sessions` is what makes it valid: logout
revokes the record, so even a copied cookie stops working at once, and the staff live socket of
that session is closed. Signing in always starts a new session (a fresh id and cookie), so an id
planted before sign-in is worthless.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import Session, get_session, new_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from multidict import MultiDictProxy

from diagnoxix.dashboard.inputs import read_form
from diagnoxix.dashboard.security import csrf_matches, csrf_token, hash_session_id, same_origin
from diagnoxix.dashboard.state import DASHBOARD
from diagnoxix.keys import FORWARDING, STORE
from diagnoxix.models import utc_now

COOKIE_NAME = "dxn_dashboard"
# A clinic shift; after that staff sign in again. The cookie and the record both expire.
SESSION_LIFETIME = timedelta(hours=8)
LOGIN_PATH = "/dashboard/login"
_STAFF = web.RequestKey("diagnoxix.dashboard.staff", object)
# A Fernet token is URL-safe base64. aiohttp-session encodes the cookie as UTF-8 before checking
# it and catches only InvalidToken, so a cookie with a byte that is not UTF-8 (kept as a lone
# surrogate) would raise on every dashboard page, the sign-in page too, locking that browser out.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_=-]+")


class DashboardCookieStorage(EncryptedCookieStorage):
    """HttpOnly, SameSite=Strict, bounded lifetime; Secure whenever the browser used HTTPS.

    Behind a TLS-ending proxy the request reaches us over plain HTTP (`request.secure` is false):
    the scheme the browser used is what a trusted proxy's `X-Forwarded-Proto` says.
    """

    def __init__(self, key: bytes) -> None:
        super().__init__(
            key,
            cookie_name=COOKIE_NAME,
            max_age=int(SESSION_LIFETIME.total_seconds()),
            path="/dashboard/",
            httponly=True,
            samesite="Strict",
        )

    def load_cookie(self, request: web.Request) -> str | None:
        """The cookie if it can be one of ours; anything else is no cookie: a fresh session, as
        for a cookie that does not decrypt."""
        cookie = super().load_cookie(request)
        return cookie if cookie is not None and _TOKEN_SHAPE.fullmatch(cookie) else None

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        await super().save_session(request, response, session)
        browser_scheme = request.config_dict[FORWARDING].scheme(request)
        if browser_scheme == "https" and self.cookie_name in response.cookies:
            response.cookies[self.cookie_name]["secure"] = True


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp-session's middleware, built at startup once the secret (hence the key) is known."""
    return await request.config_dict[DASHBOARD].session_middleware(request, handler)


@dataclass(frozen=True, slots=True)
class Staff:
    username: str
    role: str
    session_hash: str
    csrf: str
    expires_at: datetime

    @property
    def actor(self) -> str:
        """How the audit log names this person."""
        return f"staff:{self.username}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


async def current_staff(request: web.Request) -> Staff | None:
    """The signed-in staff member, or None (no cookie, unknown, revoked or expired session)."""
    if _STAFF in request:
        cached = request[_STAFF]
        return cached if isinstance(cached, Staff) else None
    staff = await _load_staff(request)
    request[_STAFF] = staff
    return staff


async def _load_staff(request: web.Request) -> Staff | None:
    session = await get_session(request)
    session_id = session.get("sid")
    if not isinstance(session_id, str):
        return None
    session_hash = hash_session_id(session_id)
    record = await request.config_dict[STORE].find_staff_session(session_hash)
    if record is None or record.revoked_at is not None or record.expires_at <= utc_now():
        return None
    key = request.config_dict[DASHBOARD].csrf_key
    return Staff(
        record.username, record.role, session_hash, csrf_token(key, "sid:" + session_id), record.expires_at
    )


def _login_redirect(request: web.Request) -> web.HTTPSeeOther:
    target = request.path_qs if request.method == "GET" else "/dashboard/"
    return web.HTTPSeeOther(f"{LOGIN_PATH}?{urlencode({'next': target})}")


async def require_staff(request: web.Request) -> Staff:
    staff = await current_staff(request)
    if staff is None:
        raise _login_redirect(request)
    return staff


async def require_admin(request: web.Request) -> Staff:
    staff = await require_staff(request)
    if not staff.is_admin:
        raise web.HTTPForbidden(reason="this action needs an admin account")
    return staff


async def anonymous_csrf(request: web.Request) -> str:
    """The sign-in form's token: tied to a random id in a pre-login cookie."""
    session = await get_session(request)
    seed = session.get("anon")
    if not isinstance(seed, str):
        seed = session["anon"] = secrets.token_urlsafe(24)
    return csrf_token(request.config_dict[DASHBOARD].csrf_key, "anon:" + seed)


async def checked_form(request: web.Request, staff: Staff | None) -> MultiDictProxy[str]:
    """The posted form, once its Origin and CSRF token prove it came from our own page.

    Raises 403 otherwise, before anything is changed; 400 or 415 (`inputs.read_form`) for a body
    that is not a form our pages send.
    """
    if not same_origin(request):
        raise web.HTTPForbidden(reason="this form was not sent from this dashboard (Origin)")
    form = await read_form(request)
    presented = form.get("csrf_token")
    if not isinstance(presented, str) or not presented:
        raise web.HTTPForbidden(reason="the form has no security token; reload the page")
    key = request.config_dict[DASHBOARD].csrf_key
    session = await get_session(request)
    prefix, name = ("sid:", "sid") if staff is not None else ("anon:", "anon")
    seed = session.get(name)
    if not isinstance(seed, str) or not csrf_matches(key, prefix + seed, presented):
        raise web.HTTPForbidden(reason="the form's security token is not valid; reload the page")
    return form


async def start_session(request: web.Request, username: str) -> None:
    """A brand-new session for a successful sign-in (never the pre-login one)."""
    session_id = secrets.token_urlsafe(32)
    expires = utc_now() + SESSION_LIFETIME
    await request.config_dict[STORE].create_staff_session(hash_session_id(session_id), username, expires)
    session = await new_session(request)
    session["sid"] = session_id


async def end_session(request: web.Request, staff: Staff) -> None:
    """Revoke the record, close the session's live sockets, clear the cookie."""
    await request.config_dict[STORE].revoke_staff_session(staff.session_hash)
    request.config_dict[DASHBOARD].live.end_session(staff.session_hash)
    session = await get_session(request)
    session.invalidate()
