"""Structured logs: one JSON line per event, ids and types only.

Minimum necessary: no title, message, data or token is ever passed to a logger. The access log
prints the path without its query string, because `?token=` carries a credential.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

# LogRecord attributes that are not ours to print as event fields.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    # The timestamp up to its seconds, formatted once a second rather than for every line: one
    # (second, text) tuple, replaced whole.
    _second: tuple[int, str] = (-1, "")

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(second)))
        return f"{cached[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            # A twentieth of the standard library's time: two lines (the access log's, the
            # event's) per request.
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # what orjson refuses (a lone surrogate, a 65-bit integer)
            return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        base = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        text = f"{base} {extras}" if extras else base
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + self.formatException(record.exc_info)
        return text


# Libraries that log statement parameters (notification content) at DEBUG: never below WARNING.
CONTENT_LOGGERS = ("aiosqlite",)


class _OfferedProtocolsUnquoted(logging.Filter):
    """aiohttp warns when none of a handshake's offered subprotocols is one the server picks, and
    quotes them all: a client may offer its token as one (`bearer.<token>`). The line keeps its
    meaning, without the list and at info level (a client's choice, not the server's problem)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "overlap" in record.msg:
            record.msg, record.args = "ws.subprotocols_not_agreed", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


# Set on a request once its API key is verified (`api.common.require_api_key`): the access line
# names the key (its id, never the secret), so a send needs no log line of its own.
ACCESS_API_KEY = web.RequestKey("diagnoxix.access_api_key", str)


def configure_logging(level: str, *, as_json: bool) -> None:
    """Set up the root logger for the server process (tests leave logging to pytest)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if as_json else PlainFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No formatter here prints the caller's file and line, or the thread or process name:
    # don't look them up for every record (the logging HOWTO's "Optimization"; about half the
    # cost of a line on the request path).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in CONTENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    websocket = logging.getLogger("aiohttp.websocket")
    if not any(isinstance(f, _OfferedProtocolsUnquoted) for f in websocket.filters):
        websocket.addFilter(_OfferedProtocolsUnquoted())


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path without query, status, duration, the client's address,
    and the id of the API key it was made with, if any. Never the query."""

    def client(self, request: web.BaseRequest) -> str | None:
        """The client's address: the peer's here; `edge.clients` names the one a trusted proxy
        forwarded."""
        return request.remote

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "remote": self.client(request),
        }
        api_key = request.get(ACCESS_API_KEY)
        if api_key is not None:
            fields["api_key"] = api_key
        self.logger.info("http.request", extra=fields)
