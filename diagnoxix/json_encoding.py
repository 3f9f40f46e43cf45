"""Compact JSON as the store keeps it and frames carry it, written by orjson where it agrees with
the standard library.

Every notification of a burst is encoded twice on the event loop: its `data` (validated, stored,
sent) and its row for the writer thread, and orjson writes both several times faster than `json`
(docs/performance.md has the figures). It is used only where its output means the same as the
standard library's, and otherwise the standard library decides, so what is accepted and refused is
exactly what it always was:

- NaN and Infinity are not JSON (a browser's JSON.parse rejects the whole frame): the standard
  library refuses them, orjson writes `null`. Output containing `null` is therefore encoded again
  by the standard library, which raises for NaN and Infinity and agrees otherwise.
- Anything orjson will not encode (integers beyond 64 bits, non-string keys, a lone surrogate,
  a set) goes to the standard library, which encodes it as before or raises as before.
- orjson encodes a UUID, an Enum or a dataclass the standard library refuses; datetimes,
  dataclasses and subclasses of str, int, dict and list are passed through to the standard
  library, which refuses them. A UUID or an Enum in `data` from a Python caller is encoded as a
  string or its value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

_strict = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def encode_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept as is; ValueError for NaN or Infinity, TypeError for what is
    not JSON (as `json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)`).
    """
    try:
        text = orjson.dumps(value, option=_PASSTHROUGH).decode()
    except TypeError:  # orjson.JSONEncodeError included
        return _strict(value)
    if "null" in text:  # a null, or a NaN or Infinity that orjson wrote as null
        return _strict(value)
    return text


def encode_rows(rows: Sequence[Sequence[Any]]) -> str:
    """Rows of strings, numbers and None for SQLite's `json_each`, as one JSON array.

    A string orjson refuses (a lone surrogate from a caller that skipped validation) leaves it to
    the standard library, and SQLite then refuses that insert alone (see `store.sqlite.batch`).
    """
    try:
        return orjson.dumps(rows).decode()
    except TypeError:
        return json.dumps(rows, ensure_ascii=False)


class DuplicateKey(ValueError):
    """A JSON object names the same key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Last-wins is what json does; a gateway or a log that reads the first key would judge a
    # different request from the one we act on.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateKey("an object names the same key twice")
    return obj


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON; stored, they would make a frame no browser can parse.
    raise ValueError(f"{name} is not valid JSON")


# Built once: `json.loads` with hooks builds a new decoder for every body it parses.
_strict_decode = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constants).decode


def decode_json(raw: str | bytes) -> Any:
    """Parse untrusted JSON strictly: ValueError for invalid JSON, NaN or Infinity, or an object
    with a repeated key (DuplicateKey); RecursionError for absurd nesting. Otherwise exactly as
    `json.loads(raw, object_pairs_hook=..., parse_constant=...)`, bytes in any encoding it reads."""
    if isinstance(raw, bytes):
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    elif raw.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
    return _strict_decode(raw)
