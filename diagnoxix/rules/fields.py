"""The two shapes every rule is written in: problems collected per field, and integer ranges."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FieldErrors(Exception):
    """One or more fields of a payload are invalid; `details` maps field path to the problem.

    Every problem of a payload is collected, not just the first, so one round trip tells a
    clinic's IT person everything to fix.
    """

    details: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, problem: str) -> None:
        self.details.setdefault(path, problem)

    def __bool__(self) -> bool:
        return bool(self.details)

    def __str__(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.details.items())


@dataclass(frozen=True, slots=True)
class Bounds:
    """An inclusive integer range, for JSON numbers and for decimal digits in a URL alike.

    One object per limit, so the check, its error message and the OpenAPI document all read the
    same two numbers.
    """

    minimum: int
    maximum: int

    @property
    def text(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"

    def integer(self, value: object) -> int | None:
        """A JSON integer in range, or None. As JSON Schema reads JSON, `5.0` is the integer 5;
        `true` is an int to Python, never to a client."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and self.minimum <= value <= self.maximum:
            return value
        return None

    def admits(self, value: object) -> bool:
        return self.integer(value) is not None

    def parse(self, raw: str) -> int | None:
        """The value of ASCII decimal digits in range, or None (a sign, a space, "²" or an overlong
        string of digits is not a number here: `int()` of thousands of digits is slow, then raises)."""
        if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(self.maximum)):
            return None
        value = int(raw)
        return value if self.minimum <= value <= self.maximum else None
