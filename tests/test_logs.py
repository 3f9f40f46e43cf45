"""Minimum necessary: logs carry ids and types, never titles, messages, data or tokens."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from diagnoxix.keys import STORE
from diagnoxix.logs import CONTENT_LOGGERS, JsonFormatter, configure_logging

from .conftest import Service

SECRET_TITLE = "HIV test result for Jane Roe"
SECRET_MESSAGE = "potassium 6.9 mmol/L"
SECRET_DATA = "MRN-0042-confidential"


async def test_no_log_line_carries_content_or_credentials(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    # The server's own loggers at their most verbose, libraries as configure_logging leaves them.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="diagnoxix")
    token = service.token("patient-77")
    ws = await service.client.ws_connect(f"/v1/ws/notifications?token={token}")
    await service.send("patient-77", SECRET_TITLE, message=SECRET_MESSAGE, data={"mrn": SECRET_DATA})
    frame = await ws.receive_json(timeout=2)
    assert frame["title"] == SECRET_TITLE
    await ws.close()
    bad = await service.client.post(
        "/v1/notifications",
        json={"user_id": "bad id", "title": SECRET_TITLE, "message": SECRET_MESSAGE},
        headers=service.auth(),
    )
    assert bad.status == 422
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("ws.connect" in line for line in lines)
    assert any("patient-77" in line for line in lines)  # ids are logged...
    text = "\n".join(lines)
    for secret in (SECRET_TITLE, SECRET_MESSAGE, SECRET_DATA, token, service.api_key):
        assert secret not in text  # ...content and credentials never


def test_json_formatter_emits_one_parseable_line_with_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "diagnoxix.ws", "levelname": "INFO", "msg": "ws.connect", "user_id": "u1", "conn_id": "c1"}
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["event"] == "ws.connect"
    assert (entry["user_id"], entry["conn_id"]) == ("u1", "c1")


def test_debug_level_never_turns_on_library_statement_logging() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in CONTENT_LOGGERS})
    lookups = {name: getattr(logging, name) for name in LOOKUPS}
    try:
        configure_logging("DEBUG", as_json=True)
        assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("diagnoxix").getEffectiveLevel() == logging.DEBUG
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
        for name, value in lookups.items():
            setattr(logging, name, value)


# What `configure_logging` stops looking up for every record (no formatter of ours prints them).
LOOKUPS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


def test_a_line_is_one_json_object_whatever_its_fields_hold() -> None:
    record = logging.makeLogRecord(
        {"name": "diagnoxix.ws", "msg": "ws.close", "levelno": 20, "levelname": "INFO"}
    )
    record.code = 1000
    record.at = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # not JSON: written as its str()
    record.reason = "bye \ud800"  # a lone surrogate: orjson refuses it, the standard library escapes it
    entry = json.loads(JsonFormatter().format(record))
    assert entry["code"] == 1000
    assert entry["at"] == "2026-01-05 12:00:00+00:00"
    assert entry["reason"] == "bye \ud800"
    record.reason = "bye"
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["event"], entry["level"], entry["logger"]) == ("ws.close", "info", "diagnoxix.ws")


async def test_the_access_line_names_the_api_key_and_a_send_adds_no_line_of_its_own(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per API request, not two: the key's id (never its secret) on the access line; the
    rest of a send (how many, from which seq) is in the audit log."""
    caplog.set_level(logging.INFO)
    await service.send("patient-5")
    refused = await service.client.post("/v1/notifications", json={"user_id": "patient-5", "title": "t"})
    assert refused.status == 401
    key_id = service.api_key.split("_")[1]
    access = [r for r in caplog.records if r.getMessage() == "http.request"]
    assert [getattr(r, "api_key", None) for r in access if r.__dict__["path"] == "/v1/notifications"] == [
        key_id,
        None,
    ]
    assert not [r for r in caplog.records if r.getMessage() == "api.send"]
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert key_id in text
    assert service.api_key not in text
    await service.app[STORE].flush()  # audit rows are bookkeeping: committed with the next batch
    audit = await service.app[STORE].audit_entries(limit=5)
    assert [(e["action"], e["details"]["count"]) for e in audit if e["action"] == "notification.send"] == [
        ("notification.send", 1)
    ]
