"""orjson writes `data` and rows only where it means what the standard library means.

`encode_json` must accept and refuse exactly what `json.dumps(..., allow_nan=False)` does, and
what it writes must parse back to the same value (only a float may be written
differently, 6.1e-05 or 0.000061); `encode_rows` must be the same JSON as
`json.dumps` of the rows.
"""

from __future__ import annotations

import datetime
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnoxix.json_encoding import encode_json, encode_rows


def _strict(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),  # beyond 64 bits too
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),  # lone surrogates included
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(value=st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_data_is_accepted_and_refused_exactly_as_the_standard_library_does(value: dict[str, Any]) -> None:
    try:
        expected: str | type[Exception] = _strict(value)
    except (ValueError, TypeError) as exc:
        expected = type(exc)
    try:
        got: str | type[Exception] = encode_json(value)
    except (ValueError, TypeError) as exc:
        got = type(exc)
    if isinstance(expected, str) and isinstance(got, str):
        try:
            expected.encode()
        except UnicodeEncodeError:  # a lone surrogate: validation refuses both the same way
            with pytest.raises(UnicodeEncodeError):
                got.encode()
            return
        # The same value; only a float may be written differently (6.1e-05 or 0.000061).
        assert json.loads(got) == json.loads(expected)
    else:
        assert got == expected


def test_nan_and_infinity_are_refused_though_orjson_would_write_null() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="not JSON compliant"):
            encode_json({"x": [1, {"y": bad}]})
    # A real null, and a string that merely contains "null", are kept.
    assert encode_json({"x": None, "y": "nullable"}) == '{"x":null,"y":"nullable"}'


def test_what_the_standard_library_refuses_stays_refused() -> None:
    for bad in ({1, 2}, datetime.datetime(2026, 1, 1), b"bytes", object()):
        with pytest.raises(TypeError):
            encode_json({"x": bad})


def test_what_the_standard_library_encodes_and_orjson_does_not_is_still_encoded() -> None:
    assert encode_json({"big": 2**70, 1: "int key"}) == '{"big":1180591620717411303424,"1":"int key"}'
    assert encode_json({"text": "héllo \U0001fa7a"}) == '{"text":"héllo \U0001fa7a"}'


def test_a_uuid_from_a_python_caller_is_written_as_its_text() -> None:
    value = uuid.UUID("01a216df-e0e6-7357-9db5-0fbee77fe5db")
    assert encode_json({"ref": value}) == '{"ref":"01a216df-e0e6-7357-9db5-0fbee77fe5db"}'


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(st.one_of(st.none(), st.text(), st.integers(-(2**63), 2**63 - 1)), max_size=8)))
def test_rows_are_the_json_the_standard_library_writes(rows: list[list[Any]]) -> None:
    got = encode_rows(rows)
    try:
        got.encode()
    except UnicodeEncodeError:  # a lone surrogate: left for SQLite to refuse, as before
        assert got == json.dumps(rows, ensure_ascii=False)
        return
    assert json.loads(got) == rows
