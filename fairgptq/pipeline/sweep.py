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
    """One run of a sweep; with repeats, one (point, seed) unit: ``group`` names the point, ``seed`` the draw.

    ``index`` is the run order (seed-major, so an unfinished sweep has whole seeds first);
    ``deal`` is the position in which ``--shard`` deals units out (case-major), so each shard
    gets a share of every case's seeds: dealing by ``index`` gives a shard whole cases whenever the
    shard count divides the case count, and then a case copied by ``--reuse`` left that shard idle.
    """

    index: int
    name: str
    values: dict[str, Any]
    raw: dict
    group: str = ""
    seed: int | None = None
    deal: int | None = None

    def in_shard(self, shard: int, count: int) -> bool:
        """Whether shard ``shard`` of ``count`` runs this unit (``--shard shard/count``)."""
        return (self.index if self.deal is None else self.deal) % count == shard


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
        point.pop("repeats", None)
        for key, value in values.items():
            keypath.set_(point, key, copy.deepcopy(value))
        name = f"{i:03d}_" + "_".join(f"{_slug(short[k])}={_slug(v)}" for k, v in values.items() if k in short)
        points.append(SweepPoint(i, name, values, point, group=name))
    return points


def single(raw: dict) -> list[SweepPoint]:
    """A pipeline without a sweep as one point (so that repeats can expand it)."""
    point = copy.deepcopy(raw)
    point.pop("sweep", None)
    point.pop("repeats", None)
    return [SweepPoint(0, "run", {}, point, group="run")]


def with_repeats(points: list[SweepPoint], seeds: list[int]) -> list[SweepPoint]:
    """Each point once per seed, as ``<point>/seed=<s>``: the pipeline seed and every calibration sample's seed
    (pair subsets and their order, text windows) become ``s``; evaluation sets keep their own seeds."""
    out: list[SweepPoint] = []
    for s_pos, seed in enumerate(seeds):  # seed-major: an unfinished run has whole seeds of every point first
        for c_pos, p in enumerate(points):
            raw = copy.deepcopy(p.raw)
            raw["seed"] = seed
            calibration = raw.get("calibration") or {}
            for pair_set in (calibration.get("pairs") or {}).values():
                if isinstance(pair_set, dict):
                    pair_set["seed"] = seed
            if isinstance(calibration.get("text"), dict):
                calibration["text"]["seed"] = seed
            out.append(SweepPoint(len(out), f"{p.name}/seed={seed}", {**p.values, "seed": seed}, raw,
                                  group=p.name, seed=seed, deal=c_pos * len(seeds) + s_pos))
    return out
