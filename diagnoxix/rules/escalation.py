"""Escalation policies: what happens to a critical item nobody has acknowledged yet.

A policy matches notifications by type and priority and lists ordered steps, each due a time
after the item was sent: to whom (`same`: the recipients of the first send; `group:<name>`;
`user:<id>`) and by which channels (`socket`: a fresh copy to their connections and offline
queue; `push` and `webhook`: the outside channels, when the server has them). The file format
(TOML) and an example are in docs/critical.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnoxix.rules.notification import PRIORITIES, is_type_name, is_valid_user_id

CHANNELS = ("socket", "push", "webhook")
# A step is due at least a second and at most a week after the item was sent.
MIN_AFTER_SECONDS = 1
MAX_AFTER_SECONDS = 7 * 24 * 3600
MAX_STEPS = 20
GROUP_NAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
_GROUP_NAME = re.compile(GROUP_NAME_REGEX)
_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AFTER = re.compile(r"^(\d{1,7})(s|m|h)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}


class PolicyError(ValueError):
    """The policies file cannot be used; the message says where and why."""


def is_group_name(value: object) -> bool:
    """`role:on-call-lab`, `ward:b-nurses`: letters, digits and . _ : @ -, up to 64."""
    return isinstance(value, str) and _GROUP_NAME.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Step:
    after_seconds: int
    # 'same', 'group:<name>' or 'user:<id>'
    to: str
    channels: tuple[str, ...]

    def to_api(self) -> dict[str, Any]:
        return {"after_seconds": self.after_seconds, "to": self.to, "channels": list(self.channels)}


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    # Empty: any type (any priority).
    types: tuple[str, ...]
    priorities: tuple[str, ...]
    steps: tuple[Step, ...]

    def matches(self, kind: str, priority: str) -> bool:
        return (not self.types or kind in self.types) and (not self.priorities or priority in self.priorities)

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "types": list(self.types),
            "priorities": list(self.priorities),
            "steps": [s.to_api() for s in self.steps],
        }


def match_policy(policies: Sequence[Policy], kind: str, priority: str) -> Policy | None:
    """The first policy (in the file's order) that matches."""
    return next((p for p in policies if p.matches(kind, priority)), None)


def _after(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise PolicyError(f"{where}.after must be seconds or a duration like 90s, 5m, 1h")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _AFTER.fullmatch(value.strip())):
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise PolicyError(f"{where}.after must be seconds or a duration like 90s, 5m, 1h")
    if not MIN_AFTER_SECONDS <= seconds <= MAX_AFTER_SECONDS:
        raise PolicyError(
            f"{where}.after must be from {MIN_AFTER_SECONDS} s to {MAX_AFTER_SECONDS // 86400} days"
        )
    return seconds


def _target(value: object, where: str) -> str:
    if value is None or value == "same":
        return "same"
    if isinstance(value, str):
        kind, _, name = value.partition(":")
        if kind == "group" and is_group_name(name):
            return value
        if kind == "user" and is_valid_user_id(name):
            return value
    raise PolicyError(f'{where}.to must be "same", "group:<group name>" or "user:<user id>"')


def _strings(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of strings")
    return list(value)


def _known(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _step(raw: object, where: str) -> Step:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be a table")
    _known(raw, {"after", "to", "channels"}, where)
    channels = _strings(raw.get("channels", ["socket"]), f"{where}.channels")
    if not channels or any(c not in CHANNELS for c in channels) or len(set(channels)) != len(channels):
        raise PolicyError(f"{where}.channels must list some of {', '.join(CHANNELS)}, each once")
    return Step(_after(raw.get("after"), where), _target(raw.get("to"), where), tuple(channels))


def _policy(raw: object, where: str, names: set[str]) -> Policy:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be a table")
    _known(raw, {"name", "types", "priorities", "steps"}, where)
    name = raw.get("name")
    if not isinstance(name, str) or not _POLICY_NAME.fullmatch(name) or name in names:
        raise PolicyError(f"{where}.name must be a unique name (letters, digits, . _ -)")
    names.add(name)
    types = _strings(raw.get("types"), f"{where}.types")
    if not all(is_type_name(t) for t in types):
        raise PolicyError(f"{where}.types must be notification types")
    priorities = _strings(raw.get("priorities"), f"{where}.priorities")
    if not all(p in PRIORITIES for p in priorities):
        raise PolicyError(f"{where}.priorities must be among {', '.join(PRIORITIES)}")
    raw_steps = raw.get("steps", [])
    if not isinstance(raw_steps, list) or len(raw_steps) > MAX_STEPS:
        raise PolicyError(f"{where}.steps must be a list of at most {MAX_STEPS} steps")
    steps = tuple(_step(s, f"{where}.steps[{i}]") for i, s in enumerate(raw_steps))
    if [s.after_seconds for s in steps] != sorted({s.after_seconds for s in steps}):
        raise PolicyError(f"{where}.steps must come in order of `after`, each at its own time")
    return Policy(name, tuple(types), tuple(priorities), steps)


def parse_policies(document: Mapping[str, Any]) -> tuple[Policy, ...]:
    """`{"policies": [...]}` (a parsed TOML file) into policies; raises PolicyError."""
    _known(document, {"policies"}, "the file")
    raw = document.get("policies", [])
    if not isinstance(raw, list):
        raise PolicyError("policies must be an array of tables ([[policies]])")
    names: set[str] = set()
    return tuple(_policy(p, f"policies[{i}]", names) for i, p in enumerate(raw))


def load_policies(path: Path) -> tuple[Policy, ...]:
    """Read and check the policies file; raises PolicyError naming the file and the problem."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path} is not TOML: {exc}") from None
    try:
        return parse_policies(document)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
