"""Wording typed notifications from templates, in each user's locale (`TemplateBook`).

A typed draft (`rules.kinds`) arrives worded in English and carrying its facts (`Wording`). Before
it is stored (or scheduled), the book picks its locale (the one the send named, else the user's,
else the server's default), finds the template of its type in that locale (staff's, else the
built-in one; `de-AT` finds `de`; English last) and renders title and message in the sandbox
(`rules.templates`). A template that fails to render, or renders too long or blank, leaves the
built-in English text, and is logged by type and locale: never a fact or a rendered word.

The built-in templates are compiled once; staff's (the dashboard) are loaded at start and
replaced as staff save them. One process owns the database, so the book is always current.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from diagnoxix.models import NotificationDraft
from diagnoxix.rules.locales import candidates
from diagnoxix.rules.notification import MAX_MESSAGE_CHARS, MAX_TITLE_CHARS
from diagnoxix.rules.templates import (
    BUILT_IN,
    MAX_MESSAGE_TEMPLATE_CHARS,
    MAX_TITLE_TEMPLATE_CHARS,
    TEMPLATE_TYPES,
    Sandbox,
    TemplateProblem,
    check_template,
)
from diagnoxix.store.messaging_records import MessagingStore, StoredTemplate

log = logging.getLogger("diagnoxix.templates")


@dataclass(frozen=True, slots=True)
class Compiled:
    title: Any
    message: Any
    source: tuple[str, str]
    # Who saved it (None: built in), and when.
    stored: StoredTemplate | None = None


class TemplateBook:
    def __init__(self, store: MessagingStore, default_locale: str) -> None:
        self._store = store
        self._default = default_locale
        self._sandbox = Sandbox()
        self._templates: dict[tuple[str, str], Compiled] = {}
        for (type_, locale), (title, message) in BUILT_IN.items():
            compiled = self._compile(type_, title, message)
            assert compiled is not None, (type_, locale)
            self._templates[(type_, locale)] = compiled

    @property
    def default_locale(self) -> str:
        return self._default

    def _compile(
        self, type_: str, title: str, message: str, stored: StoredTemplate | None = None
    ) -> Compiled | None:
        variables = TEMPLATE_TYPES[type_].variables
        try:
            return Compiled(
                self._sandbox.compile(title, MAX_TITLE_TEMPLATE_CHARS, variables),
                self._sandbox.compile(message, MAX_MESSAGE_TEMPLATE_CHARS, variables),
                (title, message),
                stored,
            )
        except TemplateProblem:
            return None

    async def load(self) -> None:
        """Staff's templates from the store, over the built-in ones."""
        for stored in await self._store.list_templates():
            if stored.type not in TEMPLATE_TYPES:
                continue
            compiled = self._compile(stored.type, stored.title, stored.message, stored)
            if compiled is None:  # saved under other rules; the built-in one stays
                log.warning("template.unusable", extra={"type": stored.type, "locale": stored.locale})
                continue
            self._templates[(stored.type, stored.locale)] = compiled

    def check(self, type_: str, title: str, message: str) -> dict[str, str]:
        """Problems with a template (by field), empty if it may be saved."""
        return check_template(self._sandbox, type_, title, message)

    async def save(self, type_: str, locale: str, title: str, message: str, by: str, at: datetime) -> None:
        """Add or replace staff's template (checked first with `check`)."""
        stored = StoredTemplate(type_, locale, title, message, at, by)
        compiled = self._compile(type_, title, message, stored)
        if compiled is None:
            raise TemplateProblem("the template does not compile")
        await self._store.save_template(stored)
        self._templates[(type_, locale)] = compiled

    async def delete(self, type_: str, locale: str) -> bool:
        """Drop staff's template; the built-in one (if any) applies again."""
        deleted = await self._store.delete_template(type_, locale)
        built_in = BUILT_IN.get((type_, locale))
        if built_in is not None:
            self._templates[(type_, locale)] = self._compile(type_, *built_in)  # type: ignore[assignment]
        else:
            self._templates.pop((type_, locale), None)
        return deleted

    def entries(self) -> list[tuple[str, str, Compiled]]:
        """Every template in use: (type, locale, template), by type then locale."""
        return [(t, loc, c) for (t, loc), c in sorted(self._templates.items())]

    def source(self, type_: str, locale: str) -> tuple[str, str] | None:
        found = self._templates.get((type_, locale))
        return found.source if found is not None else None

    async def word(self, drafts: Sequence[NotificationDraft]) -> None:
        """Word each typed draft from its template, in place (a draft in the sender's own words
        is left as it is). One read of the locales of the users it concerns."""
        typed = [d for d in drafts if d.wording is not None]
        if not typed:
            return
        unnamed = [d.user_id for d in typed if d.wording is not None and d.wording.locale is None]
        locales = await self._store.user_locales(unnamed) if unnamed else {}
        for draft in typed:
            wording = draft.wording
            assert wording is not None
            locale = wording.locale or locales.get(draft.user_id)
            self._render(draft, locale, wording.variables, wording.own_message)
            draft.wording = None

    def _render(
        self, draft: NotificationDraft, locale: str | None, variables: dict[str, Any], own_message: bool
    ) -> None:
        for tag in candidates(locale, self._default):
            template = self._templates.get((draft.type, tag))
            if template is None:
                continue
            try:
                title = self._sandbox.render(template.title, variables, MAX_TITLE_CHARS, required=True)
                message = draft.message
                if not own_message:
                    message = self._sandbox.render(
                        template.message, variables, MAX_MESSAGE_CHARS, required=False
                    )
            except TemplateProblem as exc:
                # The built-in English text stays. Never a fact or a rendered word in the log.
                log.warning("template.failed", extra={"type": draft.type, "locale": tag, "problem": str(exc)})
                return
            draft.title, draft.message = title, message
            return
