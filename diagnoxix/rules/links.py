"""A notification's portal link and actions: what a send may say under `url` and `actions`.

A `url` is opened when the user clicks the notification (the browser SDK, the dashboard's test
client, a push notification); an action is a button, either a link (`{"label", "url"}`) or an
answer (`{"label", "action"}`, such as confirm or decline) that goes back to the sender.

Every link is `https://` to one of the configured hosts (`LinkPolicy`, from the
`DIAGNOXIX_LINK_HOSTS` setting; in --dev also `http(s)://localhost` and `127.0.0.1`), with no
user part (`https://portal.example@elsewhere` is refused) and nothing but visible ASCII: a link
in a notification is a phishing vector, so only the clinic's own portal may be the target. The
rule is one regular expression, which the OpenAPI document states as the field's pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from diagnoxix.models import Action, Links
from diagnoxix.rules.fields import FieldErrors
from diagnoxix.rules.notification import TITLE_REGEX

# A link is an address, not a document: 2,048 characters is what every browser takes.
MAX_URL_CHARS = 2048
# Three buttons fit every notification centre (Android and desktop browsers show two or three).
MAX_ACTIONS = 3
# A button's label: a word or two ("Confirm", "Reschedule online"), not blank, no NUL.
MAX_LABEL_CHARS = 40
LABEL_REGEX = TITLE_REGEX
# An answer's name, as the sender's webhook receives it and the answering path carries it.
MAX_ACTION_NAME_CHARS = 32
ACTION_NAME_REGEX = rf"^[a-z][a-z0-9_-]{{0,{MAX_ACTION_NAME_CHARS - 1}}}$"
_ACTION_NAME = re.compile(ACTION_NAME_REGEX)
_LABEL = re.compile(LABEL_REGEX)
# A host as configured: lowercase DNS labels (an internationalised name in its xn-- form).
HOST_REGEX = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
_HOST = re.compile(HOST_REGEX)
DEV_HOSTS = ("localhost", "127.0.0.1")

LINK_FIELDS = frozenset({"url", "actions"})


def is_action_name(value: object) -> bool:
    return isinstance(value, str) and _ACTION_NAME.fullmatch(value) is not None


def is_host(value: str) -> bool:
    return len(value) <= 253 and _HOST.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """Where links may point: `hosts` over https, and (`dev`) localhost over http or https."""

    hosts: tuple[str, ...] = ()
    dev: bool = False

    @property
    def allows_links(self) -> bool:
        return bool(self.hosts) or self.dev

    @property
    def url_regex(self) -> str:
        """The whole rule for a link: scheme, an allowed host, an optional port, then a path,
        query or fragment of visible ASCII. Empty when no link is allowed."""
        targets = []
        if self.hosts:
            targets.append("https://(?:" + "|".join(re.escape(h) for h in self.hosts) + ")")
        if self.dev:
            targets.append("https?://(?:" + "|".join(re.escape(h) for h in DEV_HOSTS) + ")")
        if not targets:
            return ""
        return "^(?:" + "|".join(targets) + r")(?::[0-9]{1,5})?(?:[/?#][!-~]*)?$"

    def url_problem(self, value: object) -> str | None:
        if not isinstance(value, str) or not value:
            return "must be an https link (a non-empty string)"
        if not self.allows_links:
            return "links are off: no host is configured (DIAGNOXIX_LINK_HOSTS)"
        if len(value) > MAX_URL_CHARS:
            return f"must be at most {MAX_URL_CHARS} characters (got {len(value)})"
        if re.fullmatch(self.url_regex, value) is None:
            hosts = ", ".join((*self.hosts, *(DEV_HOSTS if self.dev else ())))
            return f"must be an https link to one of the configured hosts ({hosts}), without a user part"
        return None


def _label_problem(value: object) -> str | None:
    if not isinstance(value, str) or _LABEL.fullmatch(value) is None:
        return "is required: a non-blank string without NUL"
    if len(value) > MAX_LABEL_CHARS:
        return f"must be at most {MAX_LABEL_CHARS} characters (got {len(value)})"
    return None


def _action(value: object, path: str, policy: LinkPolicy, errors: FieldErrors) -> Action | None:
    if not isinstance(value, dict):
        errors.add(path, 'must be {"label", "url"} or {"label", "action"}')
        return None
    valid = True
    for name in sorted(set(value) - {"label", "url", "action"}):
        valid = False
        errors.add(f"{path}.{name}", "is not a known field")
    if (problem := _label_problem(value.get("label"))) is not None:
        valid = False
        errors.add(f"{path}.label", problem)
    if ("url" in value) == ("action" in value):
        errors.add(path, 'must have either a "url" or an "action"')
        return None
    if "url" in value:
        if (problem := policy.url_problem(value["url"])) is not None:
            errors.add(f"{path}.url", problem)
            return None
        return Action(label=value["label"], url=value["url"]) if valid else None
    name = value["action"]
    if not is_action_name(name):
        errors.add(
            f"{path}.action",
            f"must be 1-{MAX_ACTION_NAME_CHARS} characters of a-z, 0-9, _ and - (starting with a letter)",
        )
        return None
    return Action(label=value["label"], action=str(name)) if valid else None


def parse_links(
    payload: dict[str, Any], prefix: str, errors: FieldErrors, policy: LinkPolicy
) -> tuple[bool, Links | None]:
    """(valid, links): a payload's `url` and `actions`, checked; links None when it has neither
    (absent, null, or no actions)."""
    valid = True
    url = payload.get("url")
    if url is not None and (problem := policy.url_problem(url)) is not None:
        valid = False
        errors.add(f"{prefix}url", problem)
    raw = payload.get("actions")
    actions: list[Action] = []
    if raw is not None:
        if not isinstance(raw, list) or len(raw) > MAX_ACTIONS:
            errors.add(f"{prefix}actions", f"must be a list of at most {MAX_ACTIONS} actions")
            return False, None
        for i, item in enumerate(raw):
            action = _action(item, f"{prefix}actions[{i}]", policy, errors)
            if action is None:
                valid = False
            else:
                actions.append(action)
    if not valid:
        return False, None
    if url is None and not actions:
        return True, None
    return True, Links(url=url, actions=tuple(actions))


def checked_links(url: str | None, actions: list[dict[str, Any]] | None, policy: LinkPolicy) -> Links | None:
    """A Python caller's `url` and `actions`, checked (raises FieldErrors)."""
    errors = FieldErrors()
    _, links = parse_links({"url": url, "actions": actions}, "", errors, policy)
    if errors:
        raise errors
    return links
