"""The one error type users see: a bad name, parameter or value, explained in one line.

The CLI prints ``str(error)`` and exits with code 2; the library never prints or exits.
"""

from __future__ import annotations

from collections.abc import Iterable


class SepbenchError(ValueError):
    """Bad input: the message names the problem and the allowed values."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> SepbenchError:
    return SepbenchError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")


def check_int(owner: str, name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int in [low, high], else raise a one-line SepbenchError."""
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise SepbenchError(f"{owner}: {name} must be an integer {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise SepbenchError(f"{owner}: {name} must be in {allowed}, got {value}")
    return value


def check_choice(owner: str, name: str, value: object, allowed: Iterable[object]) -> object:
    allowed = list(allowed)
    if value not in allowed:
        raise SepbenchError(
            f"{owner}: {name} must be one of {', '.join(map(str, allowed))}; got {value!r}"
        )
    return value
