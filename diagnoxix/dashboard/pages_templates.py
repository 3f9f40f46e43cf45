"""Templates of the standard texts: staff see every template in use (built-in or their own, per
notification type and locale) and add or replace one, checked in the sandbox first.

A template is Jinja source for a title and a message, rendered as plain text with a typed
notification's facts (`rules.templates`); it is compiled and tried with each example of its type
before it is saved, so a mistake is an error next to its field, never a patient's broken
notification. Saving and removing are CSRF-checked like every form and audited (type and
locale; the words are in the template table, not the audit log).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from diagnoxix.dashboard.render import render
from diagnoxix.dashboard.sessions import Staff, checked_form, require_staff
from diagnoxix.keys import CLOCK, STORE, TEMPLATES
from diagnoxix.rules.locales import BUILT_IN_LOCALES, locale_problem
from diagnoxix.rules.templates import TEMPLATE_TYPES

log = logging.getLogger("diagnoxix.dashboard")


async def _page(request: web.Request, staff: Staff, extra: dict[str, Any], status: int = 200) -> web.Response:
    book = request.config_dict[TEMPLATES]
    context = {
        "templates": book.entries(),
        "types": [(name, name) for name in TEMPLATE_TYPES],
        "variables": {name: ", ".join(t.variables) for name, t in TEMPLATE_TYPES.items()},
        "locales": BUILT_IN_LOCALES,
        "default_locale": book.default_locale,
        "errors": {},
        "form": {},
        "saved": None,
        "removed": None,
        **extra,
    }
    return await render(request, "message_templates.html", context, staff=staff, status=status)


async def templates_page(request: web.Request) -> web.StreamResponse:
    staff = await require_staff(request)
    extra: dict[str, Any] = {"saved": request.query.get("saved"), "removed": request.query.get("removed")}
    edit = (request.query.get("type", ""), request.query.get("locale", ""))
    source = request.config_dict[TEMPLATES].source(*edit)
    if source is not None:
        extra["form"] = {"type": edit[0], "locale": edit[1], "title": source[0], "message": source[1]}
    return await _page(request, staff, extra)


async def save_template(request: web.Request) -> web.StreamResponse:
    """Add or replace the template of a type and locale (staff and admins)."""
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    fields = {name: form.get(name, "") for name in ("type", "locale", "title", "message")}
    fields["locale"] = fields["locale"].strip()
    book = request.config_dict[TEMPLATES]
    errors = book.check(fields["type"], fields["title"], fields["message"])
    if (problem := locale_problem(fields["locale"], required=True)) is not None:
        errors["locale"] = problem
    if errors:
        return await _page(request, staff, {"errors": errors, "form": fields}, status=422)
    await book.save(
        fields["type"],
        fields["locale"],
        fields["title"],
        fields["message"],
        staff.username,
        request.config_dict[CLOCK].now(),
    )
    target = f"{fields['type']}/{fields['locale']}"
    request.config_dict[STORE].record_audit(
        staff.actor, "template.save", None, {"type": fields["type"], "locale": fields["locale"]}
    )
    log.info("dashboard.template_save", extra={"username": staff.username, "template": target})
    raise web.HTTPSeeOther(f"/dashboard/templates?saved={target}")


async def remove_template(request: web.Request) -> web.StreamResponse:
    """Remove staff's template of a type and locale: the built-in one (if any) applies again."""
    staff = await require_staff(request)
    form = await checked_form(request, staff)
    type_, locale = form.get("type", ""), form.get("locale", "")
    if type_ not in TEMPLATE_TYPES or locale_problem(locale, required=True) is not None:
        raise web.HTTPNotFound(reason="no such template")
    if not await request.config_dict[TEMPLATES].delete(type_, locale):
        raise web.HTTPNotFound(reason="no template of staff's for that type and locale")
    details = {"type": type_, "locale": locale}
    request.config_dict[STORE].record_audit(staff.actor, "template.remove", None, details)
    log.info("dashboard.template_remove", extra={"username": staff.username, "template": f"{type_}/{locale}"})
    raise web.HTTPSeeOther(f"/dashboard/templates?removed={type_}/{locale}")
