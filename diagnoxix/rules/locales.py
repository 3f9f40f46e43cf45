"""Locales: the language a user's notifications are worded in.

A locale is a BCP 47 tag as browsers and phones report it (`de`, `en-GB`, `es-419`), at most 35
characters. A tag is matched against the templates as given, then by its language alone (`de-AT`
finds `de`), then the server's default locale (`DIAGNOXIX_DEFAULT_LOCALE`), then English.
"""

from __future__ import annotations

import re

# The languages the standard texts come in without any template of the staff's.
BUILT_IN_LOCALES = ("en", "de", "es")
FALLBACK_LOCALE = "en"
# RFC 5646 allows up to 35 characters for the tags anyone uses; letters and digits in subtags.
MAX_LOCALE_CHARS = 35
LOCALE_REGEX = r"^[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$"
_LOCALE = re.compile(LOCALE_REGEX)
LOCALE_SHAPE = "a language tag such as de, en-GB or es-419 (a lowercase language, then -subtags)"


def is_locale(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_LOCALE_CHARS and _LOCALE.fullmatch(value) is not None


def locale_problem(value: object, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    return None if is_locale(value) else f"must be {LOCALE_SHAPE}, at most {MAX_LOCALE_CHARS} characters"


def candidates(*locales: str | None) -> list[str]:
    """Where to look for a template, in order: each locale given, then its language alone, then
    English; each once."""
    found: list[str] = []
    for locale in (*locales, FALLBACK_LOCALE):
        if not locale:
            continue
        for tag in (locale, locale.split("-", 1)[0]):
            if tag not in found:
                found.append(tag)
    return found
