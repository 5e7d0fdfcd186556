"""Likelihood-directed Fair-GPTQ on the real SmolLM2-135M: what holds on any machine, at any thread count.

A single run's bias score is one draw of GPTQ's rounding noise (tests/test_real_fairness.py says
why), so nothing here asserts a CrowS-Pairs figure.  What the objective is built to do is lower the
likelihood preference B = mean over pairs of ℓ(stereo) − ℓ(anti) of its calibration pairs, and the
measurements show it also lowers B on held-out StereoSet pairs.  Each check pairs the objective
with plain GPTQ on the same H, at backend threads 1 and 2 (two summation orders, two roundings).

The model is SmolLM2-135M-Instruct de-quantized from a Q4_1 GGUF (already on a 4-bit grid).
"""
from __future__ import annotations

import copy

import pytest
import torch

from fairgptq import QuantConfig, quantize_model
from fairgptq.backends import CpuBackend
from fairgptq.core.architectures import arch_for
from fairgptq.core.objective import ScoreRequest
from fairgptq.core.score_gradient import score_gradient
from fairgptq.datasets_adapters.sampling import sample_pairs
from fairgptq.datasets_adapters.stereoset import load_stereoset
from fairgptq.datasets_adapters.wikitext import calibration_windows
from fairgptq.datasets_adapters.splits import split_items
from fairgptq.objectives.likelihood_pairs import LikelihoodPairObjective, score_batches

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CONFIG = QuantConfig(bits=4, group_size=128, sym=True)
TARGET = 1.0
# Measured on this machine (one draw each, 64 windows): target 0.5 in the identity metric removed
# 0.31 of the calibration pairs' B₀ = 1.25 nats against plain GPTQ (0.62 predicted to first order;
# rounding takes the rest) and 0.23 of the held-out pairs' 1.03.  The bounds ask for a quarter of
# the predicted calibration change and any held-out fall: room for another machine's rounding,
# and a failure if the step does nothing.
MIN_CALIBRATION_DROP = 0.25 * TARGET


def _B(model, tok, pairs) -> float:
    batches, weights, _ = score_batches(pairs, tok, batch_size=64, max_length=64)
    return score_gradient(model, ScoreRequest(batches, weights), {}, arch_for(model), torch.device("cpu")).value


@pytest.fixture(scope="module")
def setup(smollm2_base, real_data_dir):
    model, tok = smollm2_base
    stereoset = load_stereoset()
    calibration_pairs = sample_pairs(split_items(stereoset, "calibration", 0.5), n=256, seed=0)
    held_out = sample_pairs(split_items(stereoset, "holdout", 0.5), n=256, seed=0)
    # 8 x 512 tokens for H: the identity step does not read H, and GPTQ's rounding of the step needs no more
    windows = calibration_windows(tok, n=8, seqlen=512, seed=0)
    return calibration_pairs, held_out, windows, _B(model, tok, calibration_pairs)


@pytest.fixture(scope="module", params=[1, 2], ids=["threads1", "threads2"])
def plain_and_debiased(request, smollm2_base, setup, computed_once) -> dict:
    return computed_once(("likelihood plain and debiased", request.param),
                         lambda: _plain_and_debiased(smollm2_base, setup, request.param))


def _plain_and_debiased(smollm2_base, setup, threads: int) -> dict:
    base, tok = smollm2_base
    pairs, held_out, windows, _ = setup
    out = {"threads": threads}
    for name, target in (("plain", 0.0), ("debiased", TARGET)):
        model = copy.deepcopy(base)
        obj = LikelihoodPairObjective(pairs, target=target, metric="identity", max_length=64)
        res = quantize_model(model, windows, CONFIG, objectives=[obj], tokenizer=tok, progress=False,
                             backend=CpuBackend(threads=threads))
        out[name] = {"B": _B(model, tok, pairs), "B_held_out": _B(model, tok, held_out), "result": res,
                     "described": obj.describe()}
        del model
    return out


def test_the_calibration_preference_falls_with_the_target(plain_and_debiased, setup):
    B0 = setup[3]
    plain, debiased = plain_and_debiased["plain"], plain_and_debiased["debiased"]
    print(f"\nthreads {plain_and_debiased['threads']}: B on the calibration pairs: float {B0:.3f}, plain GPTQ "
          f"{plain['B']:.3f}, target {TARGET} {debiased['B']:.3f}; held-out pairs: plain {plain['B_held_out']:.3f}, "
          f"target {debiased['B_held_out']:.3f}")
    assert B0 > 0.5  # the calibration pairs do prefer the stereotype: there is something to remove
    assert debiased["B"] < plain["B"] - MIN_CALIBRATION_DROP * B0
    assert debiased["B_held_out"] < plain["B_held_out"]


def test_the_step_is_reported_per_module_and_matches_the_target(plain_and_debiased, setup):
    debiased = plain_and_debiased["debiased"]
    reports = debiased["result"].reports
    targeted = [r for r in reports if r.role in ("attn_out", "mlp_out")]
    assert len(targeted) == 60 and all(r.score_change_pre_update < 0 for r in targeted)
    assert all(r.score_change_pre_update is None for r in reports if r not in targeted)
    predicted = sum(r.score_change_pre_update for r in targeted)
    assert predicted == pytest.approx(-TARGET * debiased["described"]["calibration_preference"], rel=1e-3)
    assert debiased["described"]["calibration_preference"] == pytest.approx(setup[3], rel=1e-4)
    assert all(r.fair_mode is None for r in plain_and_debiased["plain"]["result"].reports)
