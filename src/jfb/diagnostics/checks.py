"""Argument checks shared by the diagnostics: one-line ValueErrors naming option, value and range."""
from __future__ import annotations

import math


def check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


def check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    return value


def check_choice(name: str, value, allowed: tuple):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")
    return value
