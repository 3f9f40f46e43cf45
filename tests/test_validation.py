"""Every rule of a notification payload, and the exact problem it reports under its field's path.

`parse_draft` runs for each item of a batch of a thousand, so it checks fields without building
their paths unless one is wrong: these hold each rule to its message and path.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from diagnoxix.models import NotificationDraft
from diagnoxix.rules import (
    MAX_TITLE_CHARS,
    MESSAGE_REGEX,
    SENDABLE_TYPE_REGEX,
    TITLE_REGEX,
    Bounds,
    FieldErrors,
    check_type,
    is_type_name,
    is_valid_epoch,
    is_valid_user_id,
    parse_broadcast,
    parse_draft,
)
from diagnoxix.rules.notification import text_problem

VALID: dict[str, Any] = {"user_id": "patient-1", "title": "Lab result ready", "message": "m"}


def _problems(payload: Any, prefix: str = "notifications[7].") -> dict[str, str]:
    errors = FieldErrors()
    draft = parse_draft(payload, prefix=prefix, errors=errors, default_type="notification")
    assert (draft is None) == bool(errors)
    return errors.details


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"user_id": None}, "user_id", "is required and must be a non-empty string"),
        ({"user_id": ""}, "user_id", "is required and must be a non-empty string"),
        ({"user_id": "bad id!"}, "user_id", "must be 1-128 characters of letters, digits"),
        ({"user_id": "*"}, "user_id", "must be 1-128 characters"),  # the broadcast recipient
        ({"type": "a b"}, "type", "must be 1-64 characters of letters, digits"),
        ({"type": 7}, "type", "must be 1-64 characters"),
        ({"type": "Welcome"}, "type", "'Welcome' is reserved for protocol frames"),
        ({"title": "   "}, "title", "is required and must be a non-empty string"),
        ({"title": None}, "title", "is required and must be a non-empty string"),
        ({"title": "t" * 201}, "title", "must be at most 200 characters (got 201)"),
        ({"title": "a\x00b"}, "title", "must not contain NUL characters"),
        ({"title": "a\ud800"}, "title", "must be valid Unicode text (no lone surrogate escapes)"),
        ({"message": 5}, "message", "is required and must be a non-empty string"),
        ({"message": "m" * 4001}, "message", "must be at most 4000 characters (got 4001)"),
        ({"data": [1]}, "data", "must be a JSON object"),
        ({"data": {"x": math.nan}}, "data", "must not contain NaN or Infinity"),
        ({"data": {"x": {1, 2}}}, "data", "must contain only JSON values"),
        ({"data": {"x": "\udc00"}}, "data", "must contain only valid Unicode text"),
        ({"data": {"x": "y" * 17_000}}, "data", "must encode to at most 16384 bytes of JSON"),
        ({"priority": "urgent"}, "priority", "must be one of low, normal, high, critical"),
        ({"colour": "red"}, "colour", "is not a known field"),
    ],
)
def test_each_rule_reports_its_problem_under_the_items_path(
    change: dict[str, Any], field: str, problem: str
) -> None:
    details = _problems(VALID | change)
    assert list(details) == [f"notifications[7].{field}"]
    assert details[f"notifications[7].{field}"].startswith(problem)


def test_every_problem_of_an_item_is_reported_at_once() -> None:
    payload = {"user_id": "", "type": "ping", "title": "", "data": 1, "priority": 2, "x": 0}
    assert set(_problems(payload, prefix="")) == {"user_id", "type", "title", "data", "priority", "x"}


def test_not_an_object() -> None:
    assert _problems([1], prefix="notifications[0].") == {"notifications[0]": "must be a JSON object"}
    assert _problems("x", prefix="") == {"body": "must be a JSON object"}


def test_a_valid_item_becomes_its_draft_with_the_defaults() -> None:
    errors = FieldErrors()
    draft = parse_draft(VALID, errors=errors, default_type="notification")
    assert draft == NotificationDraft(
        user_id="patient-1",
        type="notification",
        title="Lab result ready",
        message="m",
        data={},
        priority="normal",
    )
    assert draft is not None
    assert draft.data_json == "{}"
    full = VALID | {"type": "lab_result", "data": {"k": "ü"}, "priority": "critical", "message": None}
    draft = parse_draft(full, errors=errors)
    assert draft == NotificationDraft(
        user_id="patient-1",
        type="lab_result",
        title="Lab result ready",
        message="",
        data={"k": "ü"},
        priority="critical",
    )
    assert draft is not None
    assert draft.data_json == '{"k":"ü"}'
    assert not errors


# -- one rule, two readers: the Python check and the pattern the OpenAPI document states ----


def test_a_trailing_newline_is_no_part_of_an_id() -> None:
    # Python's `$` matches before a final newline; the rules match whole strings.
    assert is_valid_user_id("patient-1")
    assert not is_valid_user_id("patient-1\n")
    assert _problems(VALID | {"user_id": "patient-1\n"}, prefix="") == {
        "user_id": "must be 1-128 characters of letters, digits and . _ : @ - (starting alphanumeric)"
    }
    assert not is_type_name("lab_result\n")
    assert not is_valid_epoch("9f2c\n")


def test_the_title_pattern_is_the_title_rule_for_every_character() -> None:
    title = re.compile(TITLE_REGEX)
    message = re.compile(MESSAGE_REGEX)
    # Lone surrogates are left out: refused by their own rule, and JSON text never carries them.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    # The rule: a title is not blank (`str.strip`) and has no NUL.
    refused = {c for c in chars if text_problem(c, MAX_TITLE_CHARS, required=True)}
    assert refused == {c for c in chars if c.isspace()} | {"\x00"}
    assert {c for c in chars if not title.fullmatch(c)} == refused
    assert {c for c in chars if not message.fullmatch(c)} == {"\x00"}
    assert title.fullmatch("  Lab result ready \n")
    assert not title.fullmatch(" \u3000\t")


@pytest.mark.parametrize(
    "kind",
    [
        *("lab_result", "X", "a.b:c-d", "a" * 64, "pings", "ping_2"),
        *("Ping", "PING", "ping", "read_all", "Read_All", "a" * 65, "_x", "x y", ""),
    ],
)
def test_the_sendable_type_pattern_is_the_type_rule(kind: str) -> None:
    errors = FieldErrors()
    check_type(kind, "type", errors)
    assert (re.fullmatch(SENDABLE_TYPE_REGEX, kind) is not None) == (not errors)


def test_bounds_read_json_integers_and_url_digits_alike() -> None:
    page = Bounds(1, 100)
    assert [page.integer(v) for v in (1, 100, 5.0)] == [1, 100, 5]  # JSON Schema's integers
    assert [page.integer(v) for v in (0, 101, True, 5.5, float("inf"), float("nan"), "5")] == [None] * 7
    assert page.parse("7") == 7
    assert page.parse("007") == 7
    for raw in ("", "-1", "+1", " 1", "1.0", "²", "0", "101", "9" * 5000):
        assert page.parse(raw) is None, raw


def test_a_broadcast_is_checked_like_a_notification() -> None:
    errors = FieldErrors()
    assert parse_broadcast({"title": "t", "message": False, "priority": 0, "ttl": "1h"}, errors) is None
    assert set(errors.details) == {"message", "priority", "ttl"}
    errors = FieldErrors()
    draft = parse_broadcast({"title": "t", "message": None, "data": None, "priority": None}, errors)
    assert draft == NotificationDraft(
        user_id="*", type="system", title="t", message="", data={}, priority="normal"
    )
    assert not errors
