"""Checks for constructor parameters: each says what is allowed when it refuses a value."""

from __future__ import annotations

import math
import numbers


def integer(name: str, value: object, *, minimum: int) -> int:
    """``value`` as an ``int`` (bools refused), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def real(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high``."""
    number = math.nan  # refused below: NaN fails every comparison
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (math.isfinite(number) and above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return number
