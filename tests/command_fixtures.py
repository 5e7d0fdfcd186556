"""Small on-disk inputs for the report and compare commands, written without running a model.

A sweep summary and seed-group folders in the shape ``fairgptq run`` writes them (only the fields
the commands read), so tests and fuzzing can feed the commands hundreds of variants cheaply.
"""
from __future__ import annotations

import json
from pathlib import Path

METRIC = "crows_pairs.pct_stereotype"


def interval(mean: float, half: float = 1.0, p: float | None = 0.2) -> dict:
    return {"n": 2, "mean": mean, "sd": half, "lo": mean - half, "hi": mean + half, "p": p}


def sweep_summary(seeds: tuple[int, ...] = (0, 1)) -> dict:
    """A two-point sweep with repeats: plain GPTQ and one point compared with it."""
    points = [{"name": f"{g}/seed={s}", "group": g, "seed": s, "plain": g == "000_plain", "values": {},
               "metrics": {METRIC: 55.0}, "seconds": 10.0} for g in ("000_plain", "001_fair") for s in seeds]
    groups = [{"group": "000_plain", "plain": True, "seeds": list(seeds), "metrics": {METRIC: interval(55.0)}},
              {"group": "001_fair", "seeds": list(seeds), "metrics": {METRIC: interval(54.0)},
               "reference": "000_plain", "vs_reference": {"across_seeds": {METRIC: interval(-1.0)}}}]
    return {"pipeline": "t", "keys": [], "baseline": None, "points": points, "groups": groups, "plots": []}


def write_sweep(folder: Path, summary: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    return folder


def write_group(folder: Path, values: dict[int, object]) -> Path:
    """``folder/seed=<s>/results.json`` with ``{METRIC: value}`` per seed, and an empty items/ folder."""
    for seed, value in values.items():
        run = folder / f"seed={seed}"
        (run / "items").mkdir(parents=True, exist_ok=True)
        (run / "results.json").write_text(json.dumps({"metrics": {METRIC: value}}))
    return folder
