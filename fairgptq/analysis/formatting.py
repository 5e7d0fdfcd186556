"""How a number and its interval are written in every table, report and model card: one place, one shape.

``value [lo, hi]`` with one number format for all three (a signed format for differences), the
value alone when there is no interval, and an en dash when there is no value.
"""
from __future__ import annotations

import math


def number(value: float | None, spec: str = ".4g") -> str:
    """``value`` in ``spec``; "–" for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def interval(value: float | None, lo: float | None, hi: float | None, spec: str = ".3g") -> str:
    """``value [lo, hi]`` in ``spec`` (e.g. ``+.2f`` for a difference); ``value`` alone without ``lo``."""
    if value is None:
        return "–"
    text = number(value, spec)
    return text if lo is None else f"{text} [{number(lo, spec)}, {number(hi, spec)}]"
