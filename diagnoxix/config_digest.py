"""The digest setting (docs/channels.md, docs/webhooks.md): which notification types are gathered,
per user, into one push and one webhook event per window; how its variable is read, and its entry
of `config.ENV_SETTINGS`, kept here so the settings module stays one table of the rest."""

from __future__ import annotations

from typing import Any

from diagnoxix.env_text import ConfigError, Parser, accepting, parse_int
from diagnoxix.rules import is_type_name

# The longest window: a digest that waits longer is no longer a notification.
MAX_DIGEST_SECONDS = 24 * 3600


@accepting(
    "`type=seconds` pairs, comma-separated: a notification type and its window, from 1 to"
    f" {MAX_DIGEST_SECONDS} seconds"
)
def _digest_windows(name: str, raw: str, _current: Any) -> tuple[tuple[str, int], ...]:
    windows: dict[str, int] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        kind, sep, value = part.strip().partition("=")
        kind = kind.strip()
        if not sep or not is_type_name(kind):
            raise ConfigError(f"{name} takes type=seconds pairs, not {part.strip()!r}")
        windows[kind] = parse_int(f"{name} {kind}", value.strip(), minimum=1, maximum=MAX_DIGEST_SECONDS)
    return tuple(sorted(windows.items()))


DIGEST_ENV_SETTINGS: tuple[tuple[str, str, Parser, str], ...] = (
    (
        "DIAGNOXIX_DIGEST",
        "digest_windows",
        _digest_windows,
        "notification types whose pushes and webhook events are gathered into one digest per user"
        " and window (`type=seconds`, e.g. `lab_result_ready=300`): the first one of a window"
        " starts it, and when it ends one push and one `notification.digest` event name them all;"
        " the socket still gets each at once, and critical ones are never gathered",
    ),
)
