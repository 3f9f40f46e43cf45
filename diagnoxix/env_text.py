"""How a setting's text from the environment is read: numbers, flags, lists, paths.

Each reader says in words what it accepts, built from the same bounds it checks, so the
configuration reference (docs/configuration.md, generated) cannot promise what the parser refuses.
`config.ENV_SETTINGS` pairs them with the variables.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (environment variable, its text, the settings read so far) -> the value, or ConfigError.
Parser = Callable[[str, str, Any], Any]

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A setting from the environment or the command line cannot be used."""


@dataclass(frozen=True, slots=True)
class Reader:
    """A `Parser` that also says what it accepts (the reference shows it next to the variable)."""

    parse: Parser
    accepts: str

    def __call__(self, name: str, raw: str, current: Any) -> Any:
        return self.parse(name, raw, current)


def accepting(accepts: str) -> Callable[[Parser], Reader]:
    """Decorates a parser with what it accepts, in words."""

    def wrap(parse: Parser) -> Reader:
        return Reader(parse, accepts)

    return wrap


def listed(values: Sequence[str], conjunction: str = "or") -> str:
    """`a`, `b` or `c` (an empty value is shown as the word "empty")."""
    shown = [f"`{v}`" if v else "empty" for v in values]
    return f"{', '.join(shown[:-1])} {conjunction} {shown[-1]}" if len(shown) > 1 else shown[0]


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def parse_int(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def parse_float(name: str, raw: str, *, minimum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


@accepting("any text")
def text(_name: str, raw: str, _current: Any) -> str:
    return raw


@accepting("a file path (a relative one from the working directory)")
def path(_name: str, raw: str, _current: Any) -> Path:
    return Path(raw)


@accepting(f"on: {listed(TRUE_WORDS)}; off: {listed(FALSE_WORDS)} (any case)")
def flag(name: str, raw: str, _current: Any) -> bool:
    return parse_bool(name, raw)


def whole(minimum: int, maximum: int) -> Reader:
    def parse(name: str, raw: str, _current: Any) -> int:
        return parse_int(name, raw, minimum=minimum, maximum=maximum)

    return Reader(parse, f"a whole number from {minimum} to {maximum}")


def seconds(minimum: float) -> Reader:
    def parse(name: str, raw: str, _current: Any) -> float:
        return parse_float(name, raw, minimum=minimum)

    return Reader(parse, f"a number of seconds, at least {minimum:g} (fractions allowed)")


@accepting("IPv4 or IPv6 addresses or CIDR ranges (`10.0.0.0/8`), comma-separated")
def networks(name: str, raw: str, _current: Any) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"{name} takes addresses or CIDR ranges, not {entry!r}") from None
    return entries
