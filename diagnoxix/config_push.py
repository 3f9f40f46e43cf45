"""The Web Push settings (docs/channels.md): how their variables are read, and their entries of
`config.ENV_SETTINGS` (variable, `Settings` field, reader, what it is for), kept here so the
settings module stays one table of the rest."""

from __future__ import annotations

from typing import Any

from diagnoxix.env_text import ConfigError, Parser, accepting, flag, listed, parse_int, seconds, whole
from diagnoxix.rules import is_type_name
from diagnoxix.rules.push import is_host_pattern

# A priority that is never pushed.
NEVER = "never"
# Seconds a v1 client has to acknowledge before a push goes out too, per priority (None: never).
DEFAULT_PUSH_DELAYS: tuple[tuple[str, int | None], ...] = (
    ("low", None),
    ("normal", 60),
    ("high", 30),
    ("critical", 5),
)


@accepting(
    f"`priority=seconds` pairs, comma-separated, for {listed([p for p, _ in DEFAULT_PUSH_DELAYS], 'and')};"
    f" seconds from 0 to 86400, or `{NEVER}`; a priority not named keeps its default"
)
def _push_delays(name: str, raw: str, current: Any) -> tuple[tuple[str, int | None], ...]:
    delays = dict(current.push_delays)
    for part in raw.split(","):
        priority, sep, value = part.strip().partition("=")
        if not sep or priority not in delays:
            raise ConfigError(f"{name} takes priority=seconds pairs for {', '.join(delays)}, not {part!r}")
        value = value.strip()
        delays[priority] = (
            None if value == NEVER else parse_int(f"{name} {priority}", value, minimum=0, maximum=86400)
        )
    return tuple(delays.items())


@accepting("host names, `*.` and a domain (its hosts), or `*` (any public host), comma-separated")
def _push_hosts(name: str, raw: str, _current: Any) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    for host in hosts:
        if not is_host_pattern(host):
            raise ConfigError(f"{name} takes host names, *.domain or *, not {host!r}")
    return hosts


@accepting("notification types, comma-separated")
def _type_names(name: str, raw: str, _current: Any) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in raw.split(",") if k.strip())
    for kind in kinds:
        if not is_type_name(kind):
            raise ConfigError(f"{name} takes notification types, not {kind!r}")
    return kinds


@accepting("`mailto:` and an address, or an `https://` URL")
def _contact(name: str, raw: str, _current: Any) -> str:
    value = raw.strip()
    if not (value.startswith("mailto:") and "@" in value) and not value.startswith("https://"):
        raise ConfigError(f"{name} must be mailto:someone@example.org or an https:// URL")
    return value


PUSH_ENV_SETTINGS: tuple[tuple[str, str, Parser, str], ...] = (
    (
        "DIAGNOXIX_PUSH_CONTACT",
        "push_contact",
        _contact,
        "whom the push services (Google, Mozilla, Apple) may contact about this server's Web Push"
        " (the VAPID `sub` claim): set it to your operations address",
    ),
    (
        "DIAGNOXIX_PUSH_DELAYS",
        "push_delays",
        _push_delays,
        "seconds a connected v1 client has to acknowledge a notification before it also goes to the"
        " user's push subscriptions, per priority (`never`: not pushed at all); a user with no"
        " connection gets the push at once",
    ),
    (
        "DIAGNOXIX_PUSH_HOSTS",
        "push_hosts",
        _push_hosts,
        "push services a subscription's endpoint may point at (the browsers' own and ntfy.sh by"
        " default); add a self-hosted UnifiedPush server here. `*` allows any host, never a private"
        " or loopback address",
    ),
    (
        "DIAGNOXIX_PUSH_ALLOW_LOOPBACK",
        "push_allow_loopback",
        flag,
        "development and tests only: accept `http://` endpoints on loopback hosts and push to"
        " loopback addresses (a local push service)",
    ),
    (
        "DIAGNOXIX_PUSH_TITLED_TYPES",
        "push_titled_types",
        _type_names,
        "notification types whose own title may travel in a push (through Google, Apple, Mozilla);"
        " every other push carries only a generic title and the notification's id",
    ),
    (
        "DIAGNOXIX_PUSH_SUBSCRIPTIONS_PER_USER",
        "push_subscriptions_per_user",
        whole(1, 100),
        "push subscriptions one user may have; registering one more removes their oldest",
    ),
    (
        "DIAGNOXIX_PUSH_TIMEOUT",
        "push_timeout_seconds",
        seconds(1.0),
        "seconds a push service has to answer one push before it is tried again later",
    ),
    (
        "DIAGNOXIX_PUSH_TTL",
        "push_ttl_seconds",
        whole(0, 28 * 24 * 3600),
        "seconds a push service keeps a push for a browser that is offline (RFC 8030 `TTL`), at most"
        " (never past the notification's own expiry)",
    ),
)
