"""What the dashboard takes from a browser, checked before it reaches the store, a comparison or a
page: the text of a posted form, and ids in paths and query strings.

Anyone can send the dashboard bytes no page of ours would: a body that is not UTF-8, a charset
Python decodes with an exotic codec, a multipart body, NUL. Each is a clear 4xx here, once for
every form and id, instead of a traceback wherever the value happens to be used.
"""

from __future__ import annotations

import re

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from diagnoxix.edge.bodies import read_body
from diagnoxix.keys import SETTINGS
from diagnoxix.rules.corrections import is_notification_id

# What our pages send: `<form method="post">` without enctype, encoded as the page is (UTF-8).
# A missing Content-Type is read as urlencoded, as aiohttp does.
_FORM_TYPES = frozenset({"", "application/x-www-form-urlencoded"})
# Any other charset would be decoded with whatever codec Python has of that name: `unicode_escape`
# yields lone surrogates (no database can encode them), `punycode` takes minutes on a 1 MB body.
_FORM_CHARSETS = frozenset({"utf-8", "utf8"})
# NUL: PostgreSQL refuses it in text, and C string APIs downstream cut at it. UTF-8 decoding
# already refuses surrogates; they are named too so the rule holds whatever the decoding.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_RELOAD = "reload the page and send it again"
# The largest form of ours (a notification to send: 4,000 characters of message and 16 KiB of
# data, percent-encoded) stays under 200 KB. The sign-in form is read before anyone is signed in:
# the API's 4 MiB would let anyone make the server hold 4 MiB per connection.
FORM_MAX_BYTES = 256 * 1024


def is_storable(text: str) -> bool:
    """Text every store can hold and compare: no NUL, no lone surrogate."""
    return _UNSTORABLE.search(text) is None


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The posted form's fields, as our pages send them; 415 or 400 (with why) otherwise."""
    if request.content_type == "multipart/form-data":
        # No dashboard form uploads files; aiohttp would also decode each part in the charset
        # the part names (see `_FORM_CHARSETS`), so it is refused rather than read.
        raise web.HTTPUnsupportedMediaType(reason="dashboard forms are sent urlencoded, not multipart")
    if request.content_type not in _FORM_TYPES:
        # Not a form at all (JSON, text): no field, hence no security token, as before.
        return MultiDictProxy(MultiDict())
    if (request.charset or "utf-8").lower() not in _FORM_CHARSETS:
        raise web.HTTPBadRequest(reason=f"the form must be sent as UTF-8; {_RELOAD}")
    # Within the time a connection has to send a whole request; `post()` then reads it from memory.
    await read_body(request, request.config_dict[SETTINGS].http_header_timeout_seconds, most=FORM_MAX_BYTES)
    try:
        form = await request.post()
    except ValueError as exc:  # UnicodeDecodeError: a byte that is not UTF-8
        raise web.HTTPBadRequest(reason=f"the form is not valid UTF-8; {_RELOAD}") from exc
    fields: MultiDict[str] = MultiDict()
    for name, value in form.items():
        # Urlencoded fields are always text; the check keeps the type honest.
        if not isinstance(value, str) or not is_storable(name) or not is_storable(value):
            raise web.HTTPBadRequest(reason="the form holds a character that cannot be stored (NUL)")
        fields.add(name, value)
    return MultiDictProxy(fields)


def path_id(request: web.Request, name: str, missing: str) -> str:
    """An id from the path in the shape of every id the service makes (UUIDs, hex key ids:
    `rules.corrections.PATH_ID_REGEX`); anything else is 404 `missing`, never a store query."""
    value = request.match_info[name]
    if not is_notification_id(value):
        raise web.HTTPNotFound(reason=missing)
    return value


def query_id(request: web.Request, name: str) -> str | None:
    """An id from the query string (a redirect's `?sent=<id>`), or None when absent or odd: the
    page then shows without it, as it does for an id that is gone."""
    value = request.query.get(name)
    return value if value is not None and is_notification_id(value) else None
