"""The research table script (scripts/seed_difference_table.py) on a synthetic sweep summary."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "seed_difference_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("seed_difference_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _stat(mean, lo, hi, p=None):
    return {"n": 3, "mean": mean, "sd": 1.0, "lo": lo, "hi": hi, **({"p": p} if p is not None else {})}


def test_rows_hold_float_plain_interval_and_paired_differences():
    summary = {"baseline": {"tasks": {"crows_pairs": {"pct_stereotype": 55.5}}},
               "groups": [{"group": "000_alpha=0.0", "plain": True, "seeds": [0, 1, 2],
                           "metrics": {"crows_pairs.pct_stereotype": _stat(56.0, 54.0, 58.0)}},
                          {"group": "001_alpha=0.1", "plain": False, "seeds": [0, 1, 2],
                           "vs_reference": {"across_seeds": {
                               "crows_pairs.pct_stereotype": _stat(-1.25, -3.5, 1.0, p=0.21)}}}]}
    lines = _module().table(summary, ["crows_pairs.pct_stereotype"], ["fair"]).splitlines()
    assert lines[0] == "| metric | float | plain GPTQ, mean [95 % CI] (n 3 seeds) | fair − plain |"
    assert lines[2] == "| crows_pairs.pct_stereotype | 55.50 | 56.00 [54.00, 58.00] | -1.25 [-3.50, +1.00], p 0.21 |"
    with pytest.raises(SystemExit, match="2 labels for 1 compared points"):
        _module().table(summary, ["crows_pairs.pct_stereotype"], ["a", "b"])
