"""The served OpenAPI document against the live server it describes, with generated requests.

Schemathesis reads `/v1/openapi.json` from a real server (`run.py` on 127.0.0.1, its own SQLite
file) and sends every HTTP operation requests drawn from the document, valid and invalid, twice:
with a valid API key and without credentials. The WebSocket upgrade is left to the protocol tests.

Checks: no 5xx; every response has a documented status, the documented content type and a body
matching the documented schema; a request the document calls valid is never refused with a 4xx
other than 401/403 (credentials) or 404/409/429; a request it calls invalid is refused.

Bounded and repeatable: the coverage phase (each constraint's edges, just inside and just
outside) and a fixed number of drawn examples per operation, derandomized, no example database,
no shrinking (a failure prints the request that failed, as curl). No stateful phase: each
operation stands alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from diagnoxix.rules import MAX_IDEMPOTENCY_KEY_CHARS

from .processes import Launcher, child_env, create_api_key

# Drawn per operation and generation mode (valid, invalid), besides the coverage phase's edge
# cases: enough to vary every field, few enough for the module to take ~40 s on two cores.
EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real server on a loopback port and an API key made by the CLI, as an operator would."""
    tmp: Path = tmp_path_factory.mktemp("contract")
    db = tmp / "notify.sqlite3"
    launcher = Launcher(tmp)
    try:
        _, key = asyncio.run(create_api_key(db, "contract-test"))
        # Commits need not reach the disk for this test: it checks answers, not durability.
        # The limits at the edge are tested in test_edge_limits.py and test_rate_limits.py; here
        # thousands of generated requests come from one address, some with no or bad credentials.
        env = child_env(
            DIAGNOXIX_SQLITE_SYNCHRONOUS="NORMAL",
            DIAGNOXIX_RATE_LIMIT="0",
            DIAGNOXIX_AUTH_FAILURE_LIMIT="0",
            DIAGNOXIX_API_KEY_RATE_LIMIT="0",
            # Links are checked against the hosts the document states as the pattern.
            DIAGNOXIX_LINK_HOSTS="portal.example.org,clinic.example",
        )
        server = asyncio.run(launcher.start(db, env=env))
        yield server.url, key
    finally:
        launcher.cleanup()


def _load(url: str, headers: dict[str, str]) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "headers": headers,
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",
                "no-shrink": True,
                # Credentials are the run's to give (or not), never drawn at random.
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_url(f"{url}/v1/openapi.json", config=config)


@pytest.fixture(scope="module")
def with_api_key(live_server: tuple[str, str]) -> schemathesis.BaseSchema:
    url, key = live_server
    return _load(url, {"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def without_credentials(live_server: tuple[str, str]) -> schemathesis.BaseSchema:
    url, _ = live_server
    return _load(url, {})


def test_the_document_is_valid_openapi_3_1(with_api_key: schemathesis.BaseSchema) -> None:
    with_api_key.validate()  # raises with the first place the document breaks the specification


def _call(case: schemathesis.Case[Any]) -> None:
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if isinstance(key, str) and case.meta is not None and case.meta.generation.mode.is_positive:
        # A key reused with another body is refused by design (422 idempotency_key_reused), and
        # generated keys repeat: each valid request gets a valid key of its own.
        suffix = f"-{uuid.uuid4().hex}"
        case.headers["Idempotency-Key"] = key[: MAX_IDEMPOTENCY_KEY_CHARS - len(suffix)] + suffix
    case.call_and_validate(checks=CHECKS)


# The socket and the stream do not answer once and end: generated requests would wait on them.
STREAMS = ["/v1/ws/notifications", "/v1/sse/notifications"]
keyed = schemathesis.pytest.from_fixture("with_api_key").exclude(path=STREAMS)
anonymous = schemathesis.pytest.from_fixture("without_credentials").exclude(path=STREAMS)


@keyed.parametrize()
def test_the_server_keeps_the_document_with_an_api_key(case: schemathesis.Case[Any]) -> None:
    _call(case)


@anonymous.parametrize()
def test_the_server_keeps_the_document_without_credentials(case: schemathesis.Case[Any]) -> None:
    _call(case)
