"""Every HTTP example in the README and docs/ is something the API takes or answers: each one
validates against the OpenAPI document the server serves.

JSON examples are fenced ```json blocks right after a marker line, an HTML comment (rendered
pages do not show it) naming what the block is:

    <!-- example: POST /v1/notifications request -->
    <!-- example: GET /v1/users/{user_id}/notifications 200 response -->
    <!-- example: websocket frame -->      (docs/protocol.md's frames: not HTTP)

Every ```json block carries one, so a new example cannot slip by unchecked. curl commands in
```sh blocks are requests too: their path, query, headers and body are checked against the
operation they call.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
import pytest

from diagnoxix.api.openapi import openapi_document
from diagnoxix.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- example: (?P<what>.+?) -->")
HTTP_EXAMPLE = re.compile(
    r"(?P<method>[A-Z]+) (?P<path>/\S*) (?:(?P<request>request)|(?P<status>\d{3}) response)"
)
WEBSOCKET_FRAME = "websocket frame"


@dataclass(frozen=True)
class Example:
    where: str  # file:line, for the test id and the failure message
    kind: str  # "json" (a marked block) or "curl"
    label: str  # the marker, or the curl command
    text: str


def _fences(path: Path) -> list[tuple[int, str, str, str]]:
    """(line, language, the line before the fence that is not blank, body) of each fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("```") and len(lines[i]) > 3:
            start, language = i, lines[i][3:].strip()
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            i += 1
            body = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            found.append((start + 1, language, before, "\n".join(body)))
        i += 1
    return found


def _examples() -> list[Example]:
    examples = []
    for path in DOCUMENTS:
        name = path.relative_to(REPO_ROOT)
        for line, language, before, body in _fences(path):
            where = f"{name}:{line}"
            if language == "json":
                marker = MARKER.fullmatch(before.strip())
                examples.append(Example(where, "json", marker["what"] if marker else "", body))
            elif language == "sh":
                for command in body.replace("\\\n", " ").splitlines():
                    if command.strip().startswith("curl "):
                        examples.append(Example(where, "curl", command.strip(), command))
    return examples


EXAMPLES = _examples()


def _document() -> dict[str, Any]:
    # The examples' links go to the portal host the docs name (the document states the hosts).
    return openapi_document(Settings(link_hosts=("portal.example.org",)))


def _operation(doc: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The documented path template matching `path`, and the operation of `method` on it."""
    for template, operations in doc["paths"].items():
        if re.fullmatch(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)), path):
            assert method.lower() in operations, f"{method} {template} is not documented"
            return template, operations[method.lower()]
    raise AssertionError(f"no documented path matches {path}")


def _validate(doc: dict[str, Any], instance: Any, schema: dict[str, Any]) -> None:
    """Validate as JSON Schema 2020-12, `#/components/...` references resolved in the document."""
    root = {**schema, "components": doc["components"]}
    jsonschema.Draft202012Validator(
        root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


def _json_schema(doc: dict[str, Any], holder: dict[str, Any]) -> dict[str, Any]:
    """The application/json schema of a request body or response, references followed."""
    if "$ref" in holder:
        holder = doc["components"]["responses"][holder["$ref"].rsplit("/", 1)[1]]
    schema: dict[str, Any] = holder["content"]["application/json"]["schema"]
    return schema


def _parameter_value(raw: str, schema: dict[str, Any]) -> Any:
    """A path, query or header value read as the schema's type (they travel as text)."""
    if schema.get("type") == "integer":
        return int(raw) if raw.isdigit() else raw
    if schema.get("type") == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    return raw


def _check_curl(doc: dict[str, Any], command: str) -> None:
    words = shlex.split(command)
    method, url, headers, body = "GET", "", {}, None
    at = 1
    while at < len(words):
        word = words[at]
        if word in {"-X", "-H", "-d"}:
            value = words[at + 1]
            if word == "-X":
                method = value
            elif word == "-H":
                name, _, header = value.partition(":")
                headers[name.strip().lower()] = header.strip()
            else:
                body = value
            at += 2
        else:
            url = word
            at += 1
    parts = urlsplit(url)
    assert parts.hostname in {"localhost", "127.0.0.1"}, url
    template, operation = _operation(doc, method, parts.path)
    query = dict(parse_qsl(parts.query))
    segments = dict(zip(template.split("/"), map(unquote, parts.path.split("/")), strict=True))
    for parameter in operation.get("parameters", []):
        name, where, schema = parameter["name"], parameter["in"], parameter["schema"]
        if where == "path":
            raw: str | None = segments["{" + name + "}"]
        elif where == "query":
            raw = query.pop(name, None)
        else:
            raw = headers.get(name.lower())
        if raw is None:
            assert not parameter.get("required"), f"{name} is required"
            continue
        _validate(doc, _parameter_value(raw, schema), schema)
    assert not query, f"undocumented query parameters: {sorted(query)}"
    if "requestBody" in operation:
        assert body is not None, "this operation takes a body"
        assert headers.get("content-type") == "application/json"
        _validate(doc, json.loads(body), _json_schema(doc, operation["requestBody"]))
    else:
        assert body is None, "this operation takes no body"


def _check_json(doc: dict[str, Any], label: str, text: str) -> None:
    if label == WEBSOCKET_FRAME:
        return  # frames are the protocol's (docs/protocol.md), not the HTTP API's
    http = HTTP_EXAMPLE.fullmatch(label)
    assert http, (
        "a ```json block needs <!-- example: METHOD /path request|STATUS response|websocket frame -->"
    )
    _, operation = _operation(doc, http["method"], http["path"])
    if http["request"]:
        holder = operation["requestBody"]
    else:
        assert http["status"] in operation["responses"], f"{http['status']} is not documented"
        holder = operation["responses"][http["status"]]
    _validate(doc, json.loads(text), _json_schema(doc, holder))


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.where} {e.kind}" for e in EXAMPLES])
def test_each_example_validates_against_the_document(example: Example) -> None:
    doc = _document()
    if example.kind == "curl":
        _check_curl(doc, example.text)
    else:
        _check_json(doc, example.label, example.text)


def test_the_docs_show_requests_and_responses_of_the_http_api() -> None:
    labels = [e.label for e in EXAMPLES if e.kind == "json" and e.label != WEBSOCKET_FRAME]
    assert any(label.endswith("response") for label in labels)
    assert len([e for e in EXAMPLES if e.kind == "curl"]) >= 4


def test_a_wrong_example_is_caught() -> None:
    # The checker itself: a cursor as a string, a batch too large, an undocumented status.
    doc = _document()
    page = {"notifications": [], "next_cursor": "41"}
    with pytest.raises(jsonschema.ValidationError):
        _check_json(doc, "GET /v1/users/{user_id}/notifications 200 response", json.dumps(page))
    with pytest.raises(AssertionError):
        _check_json(doc, "POST /v1/notifications 418 response", "{}")
    with pytest.raises(jsonschema.ValidationError):
        _check_curl(
            doc,
            "curl -X POST http://localhost:7556/v1/notifications -H 'Content-Type: application/json'"
            f" -d '{json.dumps({'notifications': [{'user_id': 'u', 'title': 't'}] * 1001})}'",
        )
    with pytest.raises(jsonschema.ValidationError):
        _check_curl(doc, "curl 'http://localhost:7556/v1/users/u%20x/notifications?limit=101'")
