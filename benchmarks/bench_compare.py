"""pytest-benchmark timing of ``fairgptq compare`` on two full-size evaluations.

Run:   .venv/bin/python -m pytest benchmarks/bench_compare.py --benchmark-only -s

Two runs' item files with the sizes of full evaluations: CrowS-Pairs (1508 pairs), StereoSet
intrasentence (all 2106 dev items, the real target terms when the data folder is there) and
WikiText-2 (the whole test split: 140 windows of 2048 tokens on SmolLM2's tokenizer), written
to disk and read back, then compared with 2000 paired bootstrap resamples per metric plus the
exact McNemar test.  Item values are random (the time does not depend on them).  Goal: under
10 s, negligible next to the evaluation that produced the items (minutes).
"""
from __future__ import annotations

import numpy as np
import pytest

from fairgptq.analysis.comparison import compare_runs, load_run
from fairgptq.evaluation.items import write_items

GOAL_SECONDS = 10.0


def _targets(n: int) -> list[str]:
    try:
        from fairgptq.datasets_adapters.stereoset import load_stereoset
        return [p.meta["target"] for p in load_stereoset()][:n]
    except Exception:  # no data folder: synthetic targets of the same count (~80 terms)
        return [f"target{i % 79}" for i in range(n)]


def _run(folder, rng: np.random.Generator, targets: list[str]) -> None:
    crows = [{"id": f"crows:{i}", "bias_type": f"type{i % 9}", "ll_more": float(rng.normal(-40, 5)),
              "ll_less": float(rng.normal(-40, 5))} for i in range(1508)]
    for it in crows:
        it["choice"] = int(it["ll_more"] > it["ll_less"])
    stereo = [{"id": f"ss:{i}", "domain": f"d{i % 4}", "target": t, "stereo": float(rng.normal()),
               "anti": float(rng.normal()), "unrelated": float(rng.normal(-1))} for i, t in enumerate(targets)]
    wiki = [{"id": f"window:{i}", "nll": float(rng.normal(6200, 300)), "tokens": 2047} for i in range(140)]
    write_items(folder / "items", {"crows_pairs": crows, "stereoset": stereo, "wikitext2": wiki})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(0)
    targets = _targets(2106)
    for name in ("a", "b"):
        _run(root / name, rng, targets)
    return root / "a", root / "b"


def test_compare_two_full_evaluations(benchmark, two_runs):
    a, b = two_runs

    def compare():
        return compare_runs(load_run(a), [load_run(b)], n_boot=2000, seed=0)

    result = benchmark.pedantic(compare, rounds=3, iterations=1)
    seconds = benchmark.stats.stats.max
    rows = result["comparisons"][0]["rows"]
    print(f"\ncompare: {len(rows)} metrics over 1508 + 2106 items + 140 windows, 2000 resamples: {seconds:.2f} s "
          f"(slowest of 3)")
    assert {r["metric"] for r in rows} >= {"pct_stereotype", "SS", "LMS", "ICAT", "perplexity"}
    assert seconds < GOAL_SECONDS
