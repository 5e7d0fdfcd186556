"""Sweeps: every case x grid combination becomes one ordinary pipeline (a point).

Point names are derived from the grid only (index + short key = value), so a re-run of the
same pipeline finds the same directories and can skip the points already finished.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Any

from . import keypath


@dataclass(frozen=True)
class SweepPoint:
    index: int
    name: str
    values: dict[str, Any]
    raw: dict


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The last path part (``alpha``) when unique in the grid, else the full path."""
    last = {k: str(keypath.parse(k)[-1]) for k in keys}
    counts = {v: list(last.values()).count(v) for v in last.values()}
    return {k: (last[k] if counts[last[k]] == 1 else k) for k in keys}


def _slug(value: Any) -> str:
    text = "-".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9.+_-]+", "~", text) or "none"


def expand(raw: dict, grid: dict[str, list[Any]], cases: list[dict[str, Any]] = ()) -> list[SweepPoint]:
    """One point per case x grid combination (cases slowest, then the first grid key), without the sweep."""
    keys = list(dict.fromkeys([*grid, *(k for case in cases for k in case)]))
    short = _short_keys(keys)
    points = []
    combos = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    for i, values in enumerate({**case, **combo} for case in (cases or [{}]) for combo in combos):
        point = copy.deepcopy(raw)
        point.pop("sweep", None)
        for key, value in values.items():
            keypath.set_(point, key, copy.deepcopy(value))
        name = f"{i:03d}_" + "_".join(f"{_slug(short[k])}={_slug(v)}" for k, v in values.items() if k in short)
        points.append(SweepPoint(i, name, values, point))
    return points
