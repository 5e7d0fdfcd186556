"""What the likelihood-directed objective costs on SmolLM2-135M, against plain GPTQ on the same H (issue 24).

Run:   .venv/bin/python -m pytest benchmarks/bench_likelihood.py --benchmark-only -s

Each case quantizes SmolLM2-135M-Instruct (4 bit, g128) on 64 WikiText-2 windows of 512 tokens, one
round, on the CPU backend with every available core; ``likelihood_pairs`` adds one forward and backward
pass over 256 StereoSet pairs (and, in the Hessian metric, the float Hessians of one calibration batch);
``target: auto`` (issue 33) adds the probe: at each point of its grid a pass over the validation pairs
and the control batch's text loss.
The target: the objective's quantization time at most 1.3x plain GPTQ's, checked in the last case
against the plain case's time from the same session (run the module whole, in order).
"""
from __future__ import annotations

import copy

import pytest
from bench_quantize import smollm2_and_calibration  # noqa: F401  (the shared fixture: SmolLM2 and its windows)

from fairgptq import QuantConfig, quantize_model
from fairgptq.backends import CpuBackend

MAX_RATIO = 1.3
_times: dict[str, float] = {}


@pytest.fixture(scope="module")
def calibration_pairs():
    from fairgptq.core.errors import DataError
    from fairgptq.datasets_adapters.sampling import sample_pairs
    from fairgptq.datasets_adapters.stereoset import load_stereoset
    from fairgptq.datasets_adapters.splits import split_items
    try:
        return sample_pairs(split_items(load_stereoset(), "calibration", 0.5), n=256, seed=0)
    except DataError as e:
        pytest.skip(f"StereoSet data absent: {e}")


#: case -> the objective's (target, metric); "plain" has none
CASES = {"plain": None, "identity": (0.5, "identity"), "hessian": (0.5, "hessian"), "auto": ("auto", "identity"),
         "auto_hessian": ("auto", "hessian")}


@pytest.mark.parametrize("case", list(CASES))
def test_likelihood_objective_cost(benchmark, smollm2_and_calibration, calibration_pairs, case):
    from fairgptq.objectives.likelihood_pairs import LikelihoodPairObjective

    base, windows, tok = smollm2_and_calibration
    pairs = calibration_pairs
    objectives = [] if CASES[case] is None else [
        LikelihoodPairObjective(pairs, target=CASES[case][0], metric=CASES[case][1], max_length=64)]
    model = copy.deepcopy(base)
    res = benchmark.pedantic(quantize_model, args=(model, windows, QuantConfig(bits=4, group_size=128)),
                             kwargs={"objectives": objectives, "tokenizer": tok, "progress": False,
                                     "backend": CpuBackend()}, rounds=1, iterations=1, warmup_rounds=0)
    _times[case] = res.seconds
    benchmark.extra_info.update(model="SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantized)", windows=64, pairs=256,
                                case=case, seconds=res.seconds)
    if case != "plain" and "plain" in _times:
        ratio = res.seconds / _times["plain"]
        benchmark.extra_info["ratio_to_plain"] = ratio
        print(f"\n{case}: {res.seconds:.1f} s against plain GPTQ's {_times['plain']:.1f} s ({ratio:.2f}x)")
        assert ratio <= MAX_RATIO, f"{case} costs {ratio:.2f}x plain GPTQ's quantization time (target {MAX_RATIO}x)"
