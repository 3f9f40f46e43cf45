"""Settings: one frozen, typed object built from the environment and command-line flags.

Flags win over `DIAGNOXIX_*` environment variables, which win over the defaults. Tests build
their own `Settings(...)` directly and never touch the environment.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from diagnoxix.rules import BROADCAST_TTL_SECONDS, MIN_TOKEN_TTL_SECONDS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_PATH = REPO_ROOT / "db" / "diagnoxix.sqlite3"
DEFAULT_PORT = 7556  # the seed guide's port; clients and scripts rely on it


def run_command() -> str:
    """How to run this server's own CLI from here, for hints an operator copies: the interpreter
    that runs this process (a bare `python` outside the virtualenv lacks the dependencies)."""

    def shortest(path: Path) -> str:
        try:
            return os.path.relpath(path)
        except ValueError:
            return str(path)

    python, run_py = shortest(Path(sys.executable)), shortest(REPO_ROOT / "run.py")
    # A relative interpreter path needs its "./" or "../" to be run as typed.
    if not python.startswith((".", "/")):
        python = f"./{python}"
    return f"{python} {run_py}"


class ConfigError(ValueError):
    """A setting from the environment or the command line cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db_path: Path = DEFAULT_DB_PATH
    # Development mode: the seed's `?user_id=` connections, open test-notification endpoint,
    # localhost origins. Never for a clinic's production install.
    dev: bool = False
    # Overrides the generated secret kept in the database (tokens survive restarts either way).
    secret_key: str | None = None
    # Browser origins allowed to open a WebSocket, besides the server's own origin.
    allowed_origins: tuple[str, ...] = ()
    # Proxies (addresses or CIDR ranges) whose X-Forwarded-For and -Proto are believed.
    trusted_proxies: tuple[str, ...] = ()
    # Open TCP connections from one client address (sockets and HTTP alike); a whole ward may share
    # one NAT address, so the cap is for runaway clients and floods, not for people.
    max_connections_per_address: int = 500
    # A connection must send a whole request within this time (slowloris); it is also how long
    # an idle HTTP keep-alive connection stays open.
    http_header_timeout_seconds: float = 15.0
    # API requests (and socket handshakes) per second from one client address without an API key
    # (0: no limit). Patients' pages make a few each; a ward behind one NAT address stays far below.
    http_requests_per_second_per_address: int = 200
    # Answers of 401 per minute to one client address before it may present no credentials for the
    # rest of the minute (0: no limit): expired tokens are renewed, guesses are cut off.
    auth_failures_per_minute_per_address: int = 60
    # Requests per second with one API key (0: no limit): far above what a clinic's services send,
    # low enough that a service stuck in a loop cannot take the server from everyone else.
    api_key_requests_per_second: int = 2000
    # Lifetime of a minted connection token; capped so a leaked token dies soon.
    token_ttl_seconds: int = 3600
    token_max_ttl_seconds: int = 7 * 24 * 3600
    # WebSocket ping interval: a peer that misses a pong for half of it is closed.
    ws_heartbeat_seconds: float = 30.0
    # Frames a connection may have waiting; a fuller queue means a stalled client, closed with 1013.
    ws_send_queue_limit: int = 1024
    # ... and bytes it may have waiting (a single frame always fits): history replies of up to a
    # hundred notifications count too, so a client that asks and never reads is closed with 1013.
    ws_send_queue_bytes: int = 1024 * 1024
    # A frame that cannot be written for this long means the client stopped reading: dropped.
    ws_write_timeout_seconds: float = 10.0
    # Tabs and devices of one person; more is a runaway client or an abused token.
    ws_max_connections_per_user: int = 20
    # Client frames are small control messages (ping, hello, an ack of up to 200 ids); larger is abuse.
    ws_max_client_frame_bytes: int = 16 * 1024
    # A v1 client that names no `since` in its URL must say hello within this time.
    ws_hello_timeout_seconds: float = 10.0
    # permessage-deflate costs several times the memory per idle socket, for frames of a few
    # hundred bytes that barely compress.
    ws_compress: bool = False
    # `FULL` fsyncs every commit: a notification acknowledged to a sender is on disk.
    sqlite_synchronous: str = "FULL"
    # Largest HTTP request body: a batch of 1,000 notifications with modest data fits.
    max_body_bytes: int = 4 * 1024 * 1024
    # Retention per priority, in days: critical results are kept longest. Expired notifications
    # are never served and are purged (overwritten on disk) by a background job.
    retention_days: tuple[tuple[str, int], ...] = (
        ("low", 30),
        ("normal", 90),
        ("high", 180),
        ("critical", 730),
    )
    # A broadcast reaches users who connect later until it expires.
    broadcast_ttl_seconds: int = 7 * 24 * 3600
    purge_interval_seconds: float = 300.0
    # The server asks a client for a fresh token this long before its token expires, and closes
    # the connection (1008) this long after expiry if none came.
    token_refresh_lead_seconds: int = 60
    token_expiry_grace_seconds: int = 15
    log_level: str = "INFO"
    log_json: bool = True
    # Who may scrape `/metrics`: these client addresses (loopback by default: a Prometheus on the
    # same host)...
    metrics_allowed_networks: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # ... or anyone presenting `Authorization: Bearer <this>` (unset: no token is accepted).
    metrics_token: str | None = None

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def retention_seconds(self, priority: str) -> int:
        for name, days in self.retention_days:
            if name == priority:
                return days * 24 * 3600
        return max(d for _, d in self.retention_days) * 24 * 3600


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _parse_int(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def _parse_float(name: str, raw: str, *, minimum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _parse_retention(raw: str, current: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """`low=30,normal=90,high=180,critical=730` (days); priorities not named keep their value."""
    days = dict(current)
    for part in raw.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in days:
            raise ConfigError(
                f"DIAGNOXIX_RETENTION_DAYS takes priority=days pairs for {', '.join(days)}, not {part!r}"
            )
        days[name] = _parse_int(f"DIAGNOXIX_RETENTION_DAYS {name}", value, minimum=1, maximum=36500)
    return tuple(days.items())


# (environment variable, the value seen so far) -> the setting's value, or ConfigError.
Parser = Callable[[str, str, Settings], Any]


def _text(_name: str, raw: str, _current: Settings) -> str:
    return raw


def _upper(_name: str, raw: str, _current: Settings) -> str:
    return raw.strip().upper()


def _path(_name: str, raw: str, _current: Settings) -> Path:
    return Path(raw)


def _flag(name: str, raw: str, _current: Settings) -> bool:
    return _parse_bool(name, raw)


def _whole(minimum: int, maximum: int) -> Parser:
    def parse(name: str, raw: str, _current: Settings) -> int:
        return _parse_int(name, raw, minimum=minimum, maximum=maximum)

    return parse


def _seconds(minimum: float) -> Parser:
    def parse(name: str, raw: str, _current: Settings) -> float:
        return _parse_float(name, raw, minimum=minimum)

    return parse


def _secret(name: str, raw: str, _current: Settings) -> str:
    if len(raw) < 32:
        raise ConfigError(f"{name} must be at least 32 characters")
    return raw


def _origins(_name: str, raw: str, _current: Settings) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


def _token_ttl(name: str, raw: str, current: Settings) -> int:
    return _parse_int(name, raw, minimum=MIN_TOKEN_TTL_SECONDS, maximum=current.token_max_ttl_seconds)


def _synchronous(name: str, raw: str, _current: Settings) -> str:
    value = raw.strip().upper()
    if value not in {"FULL", "NORMAL", "EXTRA"}:
        raise ConfigError(f"{name} must be FULL, EXTRA or NORMAL")
    return value


def _networks(name: str, raw: str, _current: Settings) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name} takes addresses or CIDR ranges, not {entry!r}") from None
    return entries


def _retention(_name: str, raw: str, current: Settings) -> tuple[tuple[str, int], ...]:
    return _parse_retention(raw, current.retention_days)


@dataclass(frozen=True, slots=True)
class EnvSetting:
    variable: str
    field: str
    parse: Parser


# Every setting the environment may change: variable, `Settings` field, how its text is read.
ENV_SETTINGS: tuple[EnvSetting, ...] = (
    EnvSetting("DIAGNOXIX_HOST", "host", _text),
    EnvSetting("DIAGNOXIX_PORT", "port", _whole(0, 65535)),
    EnvSetting("DIAGNOXIX_DB", "db_path", _path),
    EnvSetting("DIAGNOXIX_DEV", "dev", _flag),
    EnvSetting("DIAGNOXIX_SECRET_KEY", "secret_key", _secret),
    EnvSetting("DIAGNOXIX_ALLOWED_ORIGINS", "allowed_origins", _origins),
    EnvSetting("DIAGNOXIX_TRUSTED_PROXIES", "trusted_proxies", _networks),
    EnvSetting("DIAGNOXIX_MAX_CONNECTIONS_PER_ADDRESS", "max_connections_per_address", _whole(1, 1_000_000)),
    EnvSetting("DIAGNOXIX_HTTP_HEADER_TIMEOUT", "http_header_timeout_seconds", _seconds(1.0)),
    EnvSetting("DIAGNOXIX_RATE_LIMIT", "http_requests_per_second_per_address", _whole(0, 1_000_000)),
    EnvSetting("DIAGNOXIX_AUTH_FAILURE_LIMIT", "auth_failures_per_minute_per_address", _whole(0, 1_000_000)),
    EnvSetting("DIAGNOXIX_API_KEY_RATE_LIMIT", "api_key_requests_per_second", _whole(0, 1_000_000)),
    EnvSetting("DIAGNOXIX_TOKEN_TTL", "token_ttl_seconds", _token_ttl),
    EnvSetting("DIAGNOXIX_WS_HEARTBEAT", "ws_heartbeat_seconds", _seconds(1.0)),
    EnvSetting("DIAGNOXIX_WS_SEND_QUEUE", "ws_send_queue_limit", _whole(1, 1_000_000)),
    EnvSetting("DIAGNOXIX_WS_SEND_QUEUE_BYTES", "ws_send_queue_bytes", _whole(64 * 1024, 1024**3)),
    EnvSetting("DIAGNOXIX_WS_WRITE_TIMEOUT", "ws_write_timeout_seconds", _seconds(1.0)),
    EnvSetting("DIAGNOXIX_SQLITE_SYNCHRONOUS", "sqlite_synchronous", _synchronous),
    EnvSetting("DIAGNOXIX_RETENTION_DAYS", "retention_days", _retention),
    EnvSetting(
        "DIAGNOXIX_BROADCAST_TTL",
        "broadcast_ttl_seconds",
        _whole(BROADCAST_TTL_SECONDS.minimum, BROADCAST_TTL_SECONDS.maximum),
    ),
    EnvSetting("DIAGNOXIX_PURGE_INTERVAL", "purge_interval_seconds", _seconds(1.0)),
    EnvSetting("DIAGNOXIX_LOG_LEVEL", "log_level", _upper),
    EnvSetting("DIAGNOXIX_LOG_JSON", "log_json", _flag),
    EnvSetting("DIAGNOXIX_METRICS_ALLOW", "metrics_allowed_networks", _networks),
    EnvSetting("DIAGNOXIX_METRICS_TOKEN", "metrics_token", _secret),
)


def settings_from_env(env: Mapping[str, str], base: Settings | None = None) -> Settings:
    """Read `DIAGNOXIX_*` variables (`ENV_SETTINGS`) on top of `base` (the defaults)."""
    settings = base or Settings()
    changes: dict[str, Any] = {}
    for setting in ENV_SETTINGS:
        raw = env.get(setting.variable)
        if raw is not None:
            changes[setting.field] = setting.parse(setting.variable, raw, settings)
    return replace(settings, **changes)


def default_settings() -> Settings:
    return settings_from_env(os.environ)
