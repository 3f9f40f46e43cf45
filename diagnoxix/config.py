"""Settings: one frozen, typed object built from the environment and command-line flags.

Flags win over `DIAGNOXIX_*` environment variables, which win over the defaults. Tests build
their own `Settings(...)` directly and never touch the environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from diagnoxix.config_broker import BROKER_ENV_SETTINGS, DEFAULT_BROKER_PREFIX
from diagnoxix.config_channels import CHANNEL_ENV_SETTINGS
from diagnoxix.config_digest import DIGEST_ENV_SETTINGS
from diagnoxix.config_edge import EDGE_ENV_SETTINGS
from diagnoxix.config_push import DEFAULT_PUSH_DELAYS, NEVER, PUSH_ENV_SETTINGS

# Raised by the readers; the rest of the package imports it from here.
from diagnoxix.env_text import ConfigError as ConfigError
from diagnoxix.env_text import (
    Parser,
    Reader,
    accepting,
    flag,
    listed,
    networks,
    parse_int,
    path,
    seconds,
    text,
    whole,
)
from diagnoxix.rules import BROADCAST_TTL_SECONDS, MIN_TOKEN_TTL_SECONDS, is_type_name
from diagnoxix.rules.escalation import Policy
from diagnoxix.rules.push import DEFAULT_PUSH_HOSTS
from diagnoxix.rules.webhooks import WebhookRule

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


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting with its default. What those the environment may change are for is in
    `ENV_SETTINGS` (and so in docs/configuration.md); the comments here say why a default is so."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db_path: Path = DEFAULT_DB_PATH
    # Empty: the embedded SQLite file (`db_path`). A `postgresql://` URL: the shared store of a
    # deployment of several processes (docs/scaling.md).
    store_url: str = ""
    # Server processes on the port (SO_REUSEPORT); more than one needs the shared store and broker.
    workers: int = 1
    dev: bool = False
    secret_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    # Open TCP connections from one client address (sockets and HTTP alike); a whole ward may share
    # one NAT address, so the cap is for runaway clients and floods, not for people.
    max_connections_per_address: int = 500
    # Slowloris: a connection must send a whole request within this time.
    http_header_timeout_seconds: float = 15.0
    # A client that leaves a response unread this long (the server's buffer for it full the whole
    # time) is dropped: it holds the response in memory, and its handler, until then.
    http_write_timeout_seconds: float = 30.0
    # API requests (and socket handshakes) per second from one client address without an API key
    # (0: no limit). Patients' pages make a few each; a ward behind one NAT address stays far below.
    http_requests_per_second_per_address: int = 200
    # Expired tokens are renewed, guesses are cut off.
    auth_failures_per_minute_per_address: int = 60
    # Requests per second with one API key (0: no limit): far above what a clinic's services send,
    # low enough that a service stuck in a loop cannot take the server from everyone else.
    api_key_requests_per_second: int = 2000
    # Lifetime of a minted connection token; capped so a leaked token dies soon.
    token_ttl_seconds: int = 3600
    token_max_ttl_seconds: int = 7 * 24 * 3600
    ws_heartbeat_seconds: float = 30.0
    # A fuller queue means a stalled client; history replies count, so one that asks and never
    # reads is closed too.
    ws_send_queue_limit: int = 1024
    ws_send_queue_bytes: int = 1024 * 1024
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
    # Comment lines on an idle SSE stream (the WebSocket fallback): proxies cut a response that
    # sends nothing for their read timeout (nginx: 60 s by default).
    sse_heartbeat_seconds: float = 15.0
    sqlite_synchronous: str = "FULL"
    # Largest HTTP request body: a batch of 1,000 notifications with modest data fits.
    max_body_bytes: int = 4 * 1024 * 1024
    # Critical results are kept longest.
    retention_days: tuple[tuple[str, int], ...] = (
        ("low", 30),
        ("normal", 90),
        ("high", 180),
        ("critical", 730),
    )
    # Retention for particular notification types, in days: replaces the priority's for that type.
    retention_days_by_type: tuple[tuple[str, int], ...] = ()
    broadcast_ttl_seconds: int = 7 * 24 * 3600
    # Notification types that go on every channel at any hour, whatever a user chose (as priority
    # `critical` does): `rules.preferences`.
    critical_categories: tuple[str, ...] = ()
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
    # Outgoing webhooks (docs/webhooks.md): which notifications leave by webhook (none by default),
    # how long one attempt may take, how long a delivery is retried before it is dead, and whether
    # plain http to a loopback address is allowed (development and tests only).
    webhook_rules: tuple[WebhookRule, ...] = ()
    webhook_timeout_seconds: float = 10.0
    webhook_retry_for_seconds: int = 24 * 3600
    webhook_allow_http_loopback: bool = False
    # Escalation policies of critical items (docs/critical.md), read from a file at start.
    escalation_policies: tuple[Policy, ...] = ()
    # Hosts a notification's `url` and actions may link to, over https (none: no links at all; a
    # link in a notification is a phishing vector, so only the clinic's own portal is allowed).
    link_hosts: tuple[str, ...] = ()
    # The language typed notifications are worded in for a user who has no locale of their own.
    default_locale: str = "en"
    # Web Push (docs/channels.md). Whom a push service may contact about our pushes (VAPID `sub`).
    push_contact: str = "mailto:push-admin@localhost"
    # Seconds a v1 client has to acknowledge a notification before it goes to the user's push
    # subscriptions too, per priority (None: never pushed); a user with no connection at all gets
    # the push at once. Low priority waits for the app.
    push_delays: tuple[tuple[str, int | None], ...] = DEFAULT_PUSH_DELAYS
    # Push services' hosts (SSRF: an endpoint is a URL a user hands us); `*` is any public host.
    push_hosts: tuple[str, ...] = DEFAULT_PUSH_HOSTS
    # Tests and development: `http://` endpoints and loopback addresses (a local push service).
    push_allow_loopback: bool = False
    # Types whose own title may travel in a push; every other push says only the generic title.
    push_titled_types: tuple[str, ...] = ()
    push_subscriptions_per_user: int = 10
    push_timeout_seconds: float = 10.0
    # How long a push service keeps a push for an offline browser (RFC 8030 TTL), at most.
    push_ttl_seconds: int = 24 * 3600
    # Digests (docs/channels.md): (type, window in seconds) pairs; a type named here goes out on
    # push and webhook as one digest per user and window. None by default: each goes on its own.
    digest_windows: tuple[tuple[str, int], ...] = ()
    # Several processes (docs/scaling.md): Redis carries what every process's sockets must see and
    # what caps, presence and rate limits count. Empty: one process, everything in-process. Kept
    # out of the repr: the URL may hold a password.
    broker_url: str = field(default="", repr=False)
    broker_prefix: str = DEFAULT_BROKER_PREFIX

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def push_delay(self, priority: str) -> int | None:
        """Seconds before an unacknowledged notification of this priority is pushed (None: never)."""
        return dict(self.push_delays).get(priority)

    def retention_seconds_by_type(self) -> dict[str, int]:
        return {name: days * 24 * 3600 for name, days in self.retention_days_by_type}

    def retention_seconds(self, priority: str) -> int:
        for name, days in self.retention_days:
            if name == priority:
                return days * 24 * 3600
        return max(d for _, d in self.retention_days) * 24 * 3600


MAX_RETENTION_DAYS = 36500


def _parse_retention(raw: str, current: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """`low=30,normal=90,high=180,critical=730` (days); priorities not named keep their value."""
    days = dict(current)
    for part in raw.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in days:
            raise ConfigError(
                f"DIAGNOXIX_RETENTION_DAYS takes priority=days pairs for {', '.join(days)}, not {part!r}"
            )
        days[name] = parse_int(
            f"DIAGNOXIX_RETENTION_DAYS {name}", value, minimum=1, maximum=MAX_RETENTION_DAYS
        )
    return tuple(days.items())


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@accepting(f"{listed(LOG_LEVELS)}, in any case")
def _upper(name: str, raw: str, _current: Settings) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, not {raw!r}")
    return level


MIN_SECRET_CHARS = 32


@accepting(f"text of at least {MIN_SECRET_CHARS} characters")
def _secret(name: str, raw: str, _current: Settings) -> str:
    if len(raw) < MIN_SECRET_CHARS:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_CHARS} characters")
    return raw


@accepting("empty (the SQLite file), or a `postgresql://user:password@host:port/database` URL")
def _store_url(name: str, raw: str, _current: Settings) -> str:
    raw = raw.strip()
    if not raw:
        return ""
    # Never echo the value: it may carry a password.
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{name} must be a postgresql:// URL (or empty for the SQLite file)")
    parsed = urlsplit(raw)
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{name} has a port that is not a number") from None
    if not parsed.path.strip("/"):
        raise ConfigError(f"{name} must name a database: postgresql://host:port/DATABASE")
    return raw


def store_label(settings: Settings) -> str:
    """Which store, for logs and the dashboard: the SQLite file, or the PostgreSQL URL without its
    user and password."""
    if not settings.store_url:
        return str(settings.db_path)
    parsed = urlsplit(settings.store_url)
    host = parsed.hostname or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"postgresql://{host}{port}{parsed.path}"


@accepting("origins (`https://portal.example.org`), comma-separated; a trailing `/` is dropped")
def _origins(_name: str, raw: str, _current: Settings) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


@accepting(
    f"a whole number from {MIN_TOKEN_TTL_SECONDS} to {Settings().token_max_ttl_seconds} (the longest a"
    " token may live)"
)
def _token_ttl(name: str, raw: str, current: Settings) -> int:
    return parse_int(name, raw, minimum=MIN_TOKEN_TTL_SECONDS, maximum=current.token_max_ttl_seconds)


SYNCHRONOUS_MODES = ("FULL", "EXTRA", "NORMAL")


@accepting(f"{listed(SYNCHRONOUS_MODES)}, in any case")
def _synchronous(name: str, raw: str, _current: Settings) -> str:
    value = raw.strip().upper()
    if value not in SYNCHRONOUS_MODES:
        raise ConfigError(f"{name} must be FULL, EXTRA or NORMAL")
    return value


@accepting(
    f"`priority=days` pairs, comma-separated, for {listed([p for p, _ in Settings().retention_days], 'and')};"
    f" days from 1 to {MAX_RETENTION_DAYS}; a priority not named keeps its default"
)
def _retention(_name: str, raw: str, current: Settings) -> tuple[tuple[str, int], ...]:
    return _parse_retention(raw, current.retention_days)


@accepting(
    f"`type=days` pairs, comma-separated (`appointment_reminder=30,lab_result_ready=3650`); days from 1 to"
    f" {MAX_RETENTION_DAYS}"
)
def _retention_by_type(name: str, raw: str, _current: Settings) -> tuple[tuple[str, int], ...]:
    days: dict[str, int] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        kind, sep, value = part.strip().partition("=")
        if not sep or not is_type_name(kind.strip()):
            raise ConfigError(f"{name} takes type=days pairs (a notification type each), not {part!r}")
        days[kind.strip()] = parse_int(f"{name} {kind.strip()}", value, minimum=1, maximum=MAX_RETENTION_DAYS)
    return tuple(days.items())


@dataclass(frozen=True, slots=True)
class EnvSetting:
    variable: str
    field: str
    parse: Parser
    # What the variable is for, to an operator: docs/configuration.md is generated from it.
    help: str = ""

    @property
    def accepts(self) -> str:
        """What the variable's text may be, in words (empty for a parser that does not say)."""
        return self.parse.accepts if isinstance(self.parse, Reader) else ""

    @property
    def default(self) -> Any:
        return getattr(Settings(), self.field)


# Every setting the environment may change: variable, `Settings` field, how its text is read, and
# what it is for. docs/configuration.md is generated from this table (`make docs`).
ENV_SETTINGS: tuple[EnvSetting, ...] = (
    EnvSetting(
        "DIAGNOXIX_HOST",
        "host",
        text,
        "the address to listen on (`0.0.0.0`: every interface, behind a proxy or load balancer)",
    ),
    EnvSetting("DIAGNOXIX_PORT", "port", whole(0, 65535), "the port to listen on"),
    EnvSetting(
        "DIAGNOXIX_WORKERS",
        "workers",
        whole(1, 64),
        "server processes sharing the port (the kernel spreads connections among them); more than"
        " one needs DIAGNOXIX_STORE and DIAGNOXIX_BROKER (docs/scaling.md)",
    ),
    EnvSetting(
        "DIAGNOXIX_DB",
        "db_path",
        path,
        "the SQLite file (created with mode 0600 and migrated on start); the default is under the"
        " install directory",
    ),
    EnvSetting(
        "DIAGNOXIX_STORE",
        "store_url",
        _store_url,
        "the store of a deployment of several processes: a `postgresql://` URL (migrated on start;"
        " docs/scaling.md). Empty: the SQLite file, for one process",
    ),
    EnvSetting(
        "DIAGNOXIX_DEV",
        "dev",
        flag,
        "development mode: the seed's `?user_id=` connections, an open `POST /v1/ws/test-notification`"
        " and localhost origins are accepted, and a warning is logged. Never for a clinic's patients",
    ),
    EnvSetting(
        "DIAGNOXIX_SECRET_KEY",
        "secret_key",
        _secret,
        "signs connection tokens; when unset, a secret is generated on first start and kept in the"
        " database (tokens survive restarts either way)",
    ),
    EnvSetting(
        "DIAGNOXIX_ALLOWED_ORIGINS",
        "allowed_origins",
        _origins,
        "browser origins (your patient portal), besides the server's own, allowed to open a WebSocket,"
        " to call `/v1/` and to load `/static/` across origins (CORS, with a user's token; never"
        " cookies)",
    ),
    EnvSetting(
        "DIAGNOXIX_TRUSTED_PROXIES",
        "trusted_proxies",
        networks,
        "your reverse proxies: only from them are `X-Forwarded-For` and `X-Forwarded-Proto` believed"
        " (client addresses for limits, `https` for the Origin check); they are exempt from the"
        " per-address connection limit",
    ),
    EnvSetting(
        "DIAGNOXIX_TOKEN_TTL",
        "token_ttl_seconds",
        _token_ttl,
        "seconds a minted connection token lives when the request names no `ttl`",
    ),
    # Connections, timeouts and rate limits at the edge (docs/security.md).
    *(EnvSetting(*entry) for entry in EDGE_ENV_SETTINGS),
    EnvSetting(
        "DIAGNOXIX_SQLITE_SYNCHRONOUS",
        "sqlite_synchronous",
        _synchronous,
        "`FULL` fsyncs each commit, so a notification acknowledged to its sender is on disk; `NORMAL`"
        " trades the last commits on power loss for speed",
    ),
    EnvSetting(
        "DIAGNOXIX_RETENTION_DAYS",
        "retention_days",
        _retention,
        "days notifications are kept, per priority; expired ones are never served and are purged"
        " (overwritten on disk)",
    ),
    EnvSetting(
        "DIAGNOXIX_RETENTION_DAYS_BY_TYPE",
        "retention_days_by_type",
        _retention_by_type,
        "days notifications of the named types are kept, in place of their priority's retention"
        " (a sender's own `ttl_seconds` still wins)",
    ),
    EnvSetting(
        "DIAGNOXIX_BROADCAST_TTL",
        "broadcast_ttl_seconds",
        whole(BROADCAST_TTL_SECONDS.minimum, BROADCAST_TTL_SECONDS.maximum),
        "seconds a broadcast still reaches users who connect later, when it names no `ttl`",
    ),
    EnvSetting(
        "DIAGNOXIX_PURGE_INTERVAL",
        "purge_interval_seconds",
        seconds(1.0),
        "seconds between purges of what has expired or is of no more use: notifications, idempotency"
        " records, devices, failed dashboard sign-ins the throttle no longer counts, ended staff sessions",
    ),
    EnvSetting("DIAGNOXIX_LOG_LEVEL", "log_level", _upper, "the least severe log events written"),
    EnvSetting(
        "DIAGNOXIX_LOG_JSON",
        "log_json",
        flag,
        "logs as one JSON object a line (ids and types only, never content); off: plain text",
    ),
    EnvSetting(
        "DIAGNOXIX_METRICS_ALLOW",
        "metrics_allowed_networks",
        networks,
        "client addresses that may scrape `/metrics` (a Prometheus on the same host, by default);"
        " empty: none, only `DIAGNOXIX_METRICS_TOKEN` opens it",
    ),
    EnvSetting(
        "DIAGNOXIX_METRICS_TOKEN",
        "metrics_token",
        _secret,
        "a secret that opens `/metrics` from anywhere as `Authorization: Bearer <token>`; unset: no"
        " token is accepted",
    ),
    # Web Push (docs/channels.md).
    *(EnvSetting(*entry) for entry in CHANNEL_ENV_SETTINGS),
    *(EnvSetting(*entry) for entry in PUSH_ENV_SETTINGS),
    # Digests on push and webhook (docs/channels.md).
    *(EnvSetting(*entry) for entry in DIGEST_ENV_SETTINGS),
    # Several processes through Redis (docs/scaling.md).
    *(EnvSetting(*entry) for entry in BROKER_ENV_SETTINGS),
)


def env_setting(variable: str) -> EnvSetting:
    """The entry of `ENV_SETTINGS` for `variable` (KeyError if the server reads no such variable)."""
    for setting in ENV_SETTINGS:
        if setting.variable == variable:
            return setting
    raise KeyError(variable)


def shown(value: Any) -> str:
    """A setting's value as an operator would write it in its variable ("none" when unset)."""
    if value is None or value == () or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path):
        return value.relative_to(REPO_ROOT).as_posix() if value.is_relative_to(REPO_ROOT) else str(value)
    if isinstance(value, tuple):
        return ",".join(
            f"{item[0]}={NEVER if item[1] is None else item[1]}" if isinstance(item, tuple) else str(item)
            for item in value
        )
    return str(value)


def flag_help(what: str, variable: str) -> str:
    """A command-line flag's help: what it does, then its default and the variable that also sets
    it (the flag wins). The configuration reference recognises this ending."""
    return f"{what}{flag_help_suffix(variable)}"


def flag_help_suffix(variable: str) -> str:
    return f" (default {shown(env_setting(variable).default)}; {variable})"


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
