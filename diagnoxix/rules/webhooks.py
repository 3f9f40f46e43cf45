"""What a webhook's configuration may be: event types, endpoint URLs, and the rules file.

The rules file (`DIAGNOXIX_WEBHOOK_RULES`, TOML) says which notifications leave by webhook, and
when: at commit, or when nobody acknowledged them within a time. docs/webhooks.md shows it:

    [[rule]]
    types = ["lab_result_ready"]        # notification types; absent or empty: every type
    priorities = ["high", "critical"]   # absent or empty: every priority
    when = "unacknowledged"             # or "commit" (the default)
    after_seconds = 1800                # with "unacknowledged": how long to wait
    words = false                       # true: the title and message go too (default: ids only)
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from diagnoxix.rules.notification import PRIORITIES, is_type_name

# The events this server sends; endpoints subscribe to some of them. Other features add theirs.
NOTIFICATION_CREATED = "notification.created"
NOTIFICATION_UNACKNOWLEDGED = "notification.unacknowledged"
# Critical results (docs/critical.md): an escalation step on the webhook channel, and a person's
# acknowledgement (the sender's webhook).
CRITICAL_ESCALATED = "critical.escalated"
CRITICAL_ACKNOWLEDGED = "critical.acknowledged"
# A user answered one of a notification's actions (confirm, decline...): the sender's answer.
NOTIFICATION_ACTION_ANSWERED = "notification.action_answered"
# Several notifications of one digested type for one user within a window (`DIAGNOXIX_DIGEST`).
NOTIFICATION_DIGEST = "notification.digest"
EVENT_TYPES: tuple[str, ...] = (
    NOTIFICATION_CREATED,
    NOTIFICATION_DIGEST,
    NOTIFICATION_UNACKNOWLEDGED,
    NOTIFICATION_ACTION_ANSWERED,
    CRITICAL_ESCALATED,
    CRITICAL_ACKNOWLEDGED,
)
EVENT_TYPE_REGEX = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_EVENT_TYPE_CHARS = 64
MAX_URL_CHARS = 2000
MAX_DESCRIPTION_CHARS = 200
# "Not acknowledged within T": T from a minute to thirty days.
MIN_AFTER_SECONDS = 1
MAX_AFTER_SECONDS = 30 * 24 * 3600
WHEN = ("commit", "unacknowledged")
_RULE_KEYS = {"types", "priorities", "when", "after_seconds", "words"}


def is_event_type(name: str) -> bool:
    return len(name) <= MAX_EVENT_TYPE_CHARS and EVENT_TYPE_REGEX.match(name) is not None


@dataclass(frozen=True, slots=True)
class WebhookRule:
    """Which notifications (by type and priority) leave by webhook, and when."""

    types: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    when: str = "commit"
    after_seconds: int = 0
    words: bool = False

    def matches(self, type_: str, priority: str) -> bool:
        by_type = not self.types or type_ in self.types
        return by_type and (not self.priorities or priority in self.priorities)

    @property
    def event(self) -> str:
        return NOTIFICATION_CREATED if self.when == "commit" else NOTIFICATION_UNACKNOWLEDGED


def _names(where: str, raw: Any, valid: Any, what: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(v, str) and valid(v) for v in raw):
        raise ValueError(f"{where}: must be a list of {what}")
    return tuple(raw)


def _rule(where: str, raw: Any) -> WebhookRule:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_RULE_KEYS))})")
    types = _names(f"{where}.types", raw.get("types"), is_type_name, "notification types")
    priorities = _names(f"{where}.priorities", raw.get("priorities"), PRIORITIES.__contains__, "priorities")
    when = raw.get("when", "commit")
    if when not in WHEN:
        raise ValueError(f"{where}.when: must be one of {', '.join(WHEN)}")
    after = raw.get("after_seconds", 0)
    if when == "unacknowledged":
        whole = isinstance(after, int) and not isinstance(after, bool)
        if not whole or not MIN_AFTER_SECONDS <= after <= MAX_AFTER_SECONDS:
            raise ValueError(
                f"{where}.after_seconds: a whole number from {MIN_AFTER_SECONDS} to {MAX_AFTER_SECONDS}"
            )
    elif "after_seconds" in raw:
        raise ValueError(f'{where}.after_seconds: only for when = "unacknowledged"')
    words = raw.get("words", False)
    if not isinstance(words, bool):
        raise ValueError(f"{where}.words: must be true or false")
    return WebhookRule(types, priorities, when, after if when == "unacknowledged" else 0, words)


def parse_webhook_rules(text: str) -> tuple[WebhookRule, ...]:
    """The rules of a rules file's text; ValueError names what is wrong and where."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML: {exc}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r}: rules are [[rule]] tables")
    rules = document.get("rule", [])
    if not isinstance(rules, list):
        raise ValueError("rules are [[rule]] tables")
    return tuple(_rule(f"rule[{i}]", raw) for i, raw in enumerate(rules))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str, *, allow_http_loopback: bool) -> str | None:
    """Why this endpoint URL is refused, or None: https only (plain http to a loopback address
    only when allowed, for development and tests), no credentials in it."""
    if not url or len(url) > MAX_URL_CHARS or any(c.isspace() for c in url):
        return f"an absolute https:// URL of at most {MAX_URL_CHARS} characters, without spaces"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "not a URL"
    if not host:
        return "an absolute https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "no credentials in the URL: deliveries are signed with the endpoint's secret"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_http_loopback and _loopback(host):
        return None
    return "must be https:// (plain http only to loopback, with DIAGNOXIX_WEBHOOK_ALLOW_HTTP_LOOPBACK)"


def shown_url(url: str) -> str:
    """The URL as staff see it in lists: scheme, host, port and path; a query (it may hold a
    token) is shown as `?…`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")
