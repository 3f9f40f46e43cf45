"""The broker settings (docs/scaling.md): where Redis is, when several processes share the work,
and the prefix of every channel and key the service uses there; how their variables are read,
the address shown in logs (never a password), and their entries of `config.ENV_SETTINGS`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

from redis.asyncio.connection import parse_url

from diagnoxix.env_text import ConfigError, Parser, accepting, listed

BROKER_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_BROKER_PREFIX = "diagnoxix"
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return None
    return parts


def check_broker_url(name: str, raw: str) -> str:
    """The URL, or ConfigError. The message never repeats the value: it may hold a password."""
    url = raw.strip()
    if not url:
        return ""
    parts = _split(url)
    shape = (
        f"{name} must be a {listed([f'{s}://' for s in BROKER_SCHEMES])} URL"
        " (redis://[:password@]host[:port][/db], unix:///path/to/redis.sock), or empty"
    )
    if parts is None or parts.scheme.lower() not in BROKER_SCHEMES:
        raise ConfigError(f"{shape}; the value given is not (it is not repeated here)")
    if parts.scheme.lower() == "unix":
        if not parts.path:
            raise ConfigError(
                f"{name}: a unix:// URL names the socket's path, e.g. unix:///run/redis/redis.sock"
            )
    elif not parts.hostname:
        raise ConfigError(
            f"{name}: a {parts.scheme.lower()}:// URL names a host, e.g. redis://127.0.0.1:6379/0"
        )
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ConfigError(
            f"{name}: the path of a {parts.scheme.lower()}:// URL is a database number, e.g. /0"
        )
    try:
        parse_url(url)
    except ValueError:
        raise ConfigError(f"{name}: an option in the URL's query cannot be read") from None
    return url


def broker_target(url: str) -> str:
    """Where the broker is, for logs and errors: scheme, host, port and database, or the socket's
    path; never the user, the password or the query (which may carry one)."""
    if not url:
        return "in-process"
    parts = _split(url)
    if parts is None:
        return "an unreadable URL"
    scheme = parts.scheme.lower()
    if scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    database = parts.path.strip("/") or "0"
    return f"{scheme}://{host}:{parts.port or 6379}/{database}"


@accepting(
    f"empty (one process: everything in-process), or a {listed([f'{s}://' for s in BROKER_SCHEMES])} URL"
    " (`redis://:password@redis.internal:6379/0`, `unix:///run/redis/redis.sock`)"
)
def _broker(name: str, raw: str, _current: Any) -> str:
    return check_broker_url(name, raw)


@accepting("1 to 64 of letters, digits, `_`, `.` and `-`")
def _prefix(name: str, raw: str, _current: Any) -> str:
    prefix = raw.strip()
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError(f"{name} must be 1 to 64 of letters, digits, _ . and -")
    return prefix


BROKER_ENV_SETTINGS: tuple[tuple[str, str, Parser, str], ...] = (
    (
        "DIAGNOXIX_BROKER",
        "broker_url",
        _broker,
        "Redis, for several processes behind one load balancer (docs/scaling.md): every committed"
        " notification, unread count, disconnect and revocation reaches every process's sockets"
        " through it, and connection caps, presence and rate limits count across processes. Empty:"
        " one process, nothing shared. The password is never logged or shown; keep it out of"
        " command lines (`--broker` is visible in `ps`)",
    ),
    (
        "DIAGNOXIX_BROKER_PREFIX",
        "broker_prefix",
        _prefix,
        "the first part of the Redis channel and of every key the service uses there, so services"
        " (or two installations) can share one Redis",
    ),
)
