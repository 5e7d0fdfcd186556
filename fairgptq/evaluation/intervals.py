"""Confidence intervals for the share-of-pairs bias scores.

A pct_stereotype over a few hundred pairs moves by several points between equally
valid samples, so every pair-based score here carries a 95 % Wilson interval: it stays
inside [0, 100] and behaves at small n and extreme shares, where the normal
approximation does not.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion, in percent."""
    if n <= 0:
        raise ValueError("an interval needs at least one item")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)
