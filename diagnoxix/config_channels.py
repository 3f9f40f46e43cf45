"""The settings of the channels beyond the socket and of what they carry: critical categories and
escalation policies (docs/critical.md), webhooks (docs/webhooks.md), links and locales: how their
variables are read, and their entries of `config.ENV_SETTINGS` (variable, `Settings` field, reader,
what it is for), kept here so the settings module stays one table of the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diagnoxix.env_text import ConfigError, Parser, accepting, flag, listed, seconds, whole
from diagnoxix.rules import is_type_name
from diagnoxix.rules.escalation import Policy, PolicyError, load_policies
from diagnoxix.rules.links import is_host
from diagnoxix.rules.locales import BUILT_IN_LOCALES
from diagnoxix.rules.webhooks import WebhookRule, parse_webhook_rules


@accepting("notification types, comma-separated (`lab_result_critical,ai_finding_urgent`)")
def _types(name: str, raw: str, _current: Any) -> tuple[str, ...]:
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for kind in names:
        if not is_type_name(kind):
            raise ConfigError(f"{name} takes notification types, comma-separated, not {kind!r}")
    return tuple(dict.fromkeys(names))


@accepting("the path of a TOML file of `[[rule]]` tables (docs/webhooks.md)")
def _webhook_rules(name: str, raw: str, _current: Any) -> tuple[WebhookRule, ...]:
    try:
        text = Path(raw).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read {raw}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return parse_webhook_rules(text)
    except ValueError as exc:
        raise ConfigError(f"{name} ({raw}): {exc}") from None


@accepting("the path of a TOML file of escalation policies (docs/critical.md), read and checked at start")
def _policies(name: str, raw: str, _current: Any) -> tuple[Policy, ...]:
    try:
        return load_policies(Path(raw))
    except PolicyError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@accepting("host names (`portal.example.org`), comma-separated, lowercase")
def _hosts(name: str, raw: str, _current: Any) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in raw.split(",") if h.strip())
    for host in hosts:
        if not is_host(host):
            raise ConfigError(f"{name} takes lowercase host names, comma-separated, not {host!r}")
    return hosts


@accepting(listed(BUILT_IN_LOCALES))
def _locale(name: str, raw: str, _current: Any) -> str:
    if raw.strip() not in BUILT_IN_LOCALES:
        raise ConfigError(f"{name} must be one of {', '.join(BUILT_IN_LOCALES)}, not {raw!r}")
    return raw.strip()


CHANNEL_ENV_SETTINGS: tuple[tuple[str, str, Parser, str], ...] = (
    (
        "DIAGNOXIX_CRITICAL_CATEGORIES",
        "critical_categories",
        _types,
        "notification types a user cannot switch off or quiet: they go on every channel at any hour,"
        " as priority `critical` does",
    ),
    (
        "DIAGNOXIX_WEBHOOK_RULES",
        "webhook_rules",
        _webhook_rules,
        "which notifications leave by signed webhook to the endpoints staff configure, and when (at"
        " commit, or not acknowledged within a time); unset: none",
    ),
    (
        "DIAGNOXIX_WEBHOOK_TIMEOUT",
        "webhook_timeout_seconds",
        seconds(1.0),
        "seconds one webhook delivery attempt may take (connect, send, the answer's status) before it"
        " counts as failed and is retried",
    ),
    (
        "DIAGNOXIX_WEBHOOK_RETRY_FOR",
        "webhook_retry_for_seconds",
        whole(60, 7 * 24 * 3600),
        "seconds a webhook delivery is retried (with exponential backoff) before it is dead and waits"
        " in the dashboard's dead letters",
    ),
    (
        "DIAGNOXIX_WEBHOOK_ALLOW_HTTP_LOOPBACK",
        "webhook_allow_http_loopback",
        flag,
        "also allow webhook endpoints at plain `http://` on a loopback address (development and"
        " tests); otherwise only `https://`",
    ),
    (
        "DIAGNOXIX_ESCALATION_POLICIES",
        "escalation_policies",
        _policies,
        "escalation policies of critical items (who is told next, and how, while nobody has"
        " acknowledged one); unset: critical items wait for an acknowledgement without escalating",
    ),
    (
        "DIAGNOXIX_LINK_HOSTS",
        "link_hosts",
        _hosts,
        "hosts (your patient portal) a notification's `url` and actions may link to, over https only;"
        " none: notifications carry no links (in --dev, localhost is allowed too)",
    ),
    (
        "DIAGNOXIX_DEFAULT_LOCALE",
        "default_locale",
        _locale,
        "the language typed notifications are worded in for a user with no locale of their own (a"
        " send may name one)",
    ),
)
