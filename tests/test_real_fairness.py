"""Fair-GPTQ on the real SmolLM2-135M: what holds on any machine, at any thread count.

GPTQ's rounding on ~10k tokens of short sentences is chaotic under float summation order:
another thread count, another CPU, or another pair subset moves plain GPTQ's CrowS-Pairs
score by about a point, which is as much as the fairness term moves it at α 0.1 (see the
README's seed table, made by ``pipelines/smollm2_seeds.yaml``).  So this test does not assert
a CrowS-Pairs figure.  It asserts what the term is built to do and what the measurements over
seeds show above that noise: on held-out StereoSet pairs (never used for calibration), the
quantized targeted modules pass on less of the pair difference than plain GPTQ's do —
Σ‖Ŵ D‖² / Σ‖W D‖² (:mod:`fairgptq.evaluation.pair_gap`) — while perplexity stays within
bounds.  Plain and Fair-GPTQ are paired (same pairs, same thread count), and the whole check
runs at backend threads 1 and 2, two different summation orders.
"""
from __future__ import annotations

import copy

import pytest

from fairgptq import QuantConfig, quantize_model
from fairgptq.backends import CpuBackend
from fairgptq.datasets_adapters.sampling import sample_pairs
from fairgptq.datasets_adapters.stereoset import load_stereoset
from fairgptq.evaluation.pair_gap import PairGap, pooled_ratio
from fairgptq.evaluation.perplexity import evaluate_wikitext2
from fairgptq.datasets_adapters.splits import split_items
from fairgptq.export import snap_to_checkpoint_precision
from fairgptq.objectives.fair_pairs import FairPairObjective
from fairgptq.contract.targets import select_layers

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

N_PAIRS, N_HELD_OUT, SEED = 256, 256, 0
FAIR = {"alpha": 0.1, "mode": "exact", "layers": "upper"}
CONFIG = QuantConfig(bits=4, group_size=128, sym=True)
# Measured (pipelines/smollm2_seeds.yaml, 5 pair seeds, one thread; and this test at 1 and 2 threads):
# on the 8 targeted modules Fair-GPTQ keeps 0.96-0.97 of plain GPTQ's held-out pair gap in every run,
# while plain GPTQ's own ratio moves by about 0.001 between seeds.  The bound leaves room for another
# machine's rounding, and still fails if the term does nothing (ratio 1).
MAX_GAP_VS_PLAIN = 0.985


@pytest.fixture(scope="module")
def held_out_gap(smollm2_base, real_data_dir):
    model, tok = smollm2_base
    stereoset = load_stereoset()
    held_out = sample_pairs(split_items(stereoset, "holdout", 0.5), n=N_HELD_OUT, seed=0)
    calibration = sample_pairs(split_items(stereoset, "calibration", 0.5), n=N_PAIRS, seed=SEED)
    return calibration, PairGap(model, tok, held_out, ("attn_out", "mlp_out"), max_length=64, progress=False)


@pytest.fixture(scope="module", params=[1, 2], ids=["threads1", "threads2"])
def plain_and_fair(request, smollm2_base, held_out_gap, computed_once) -> dict:
    return computed_once(("fair-gptq plain and fair", request.param),
                         lambda: _plain_and_fair(smollm2_base, held_out_gap, request.param))


def _plain_and_fair(smollm2_base, held_out_gap, threads: int) -> dict:
    base, tok = smollm2_base
    pairs, gap = held_out_gap
    out = {"threads": threads}
    for name, alpha in (("plain", 0.0), ("fair", FAIR["alpha"])):
        model = copy.deepcopy(base)
        obj = FairPairObjective(pairs, **{**FAIR, "alpha": alpha}, max_length=64, pair_set="stereoset-intrasentence")
        res = quantize_model(model, None, CONFIG, objectives=[obj], tokenizer=tok, progress=False,
                             backend=CpuBackend(threads=threads))
        snap_to_checkpoint_precision(model, res)  # as a pipeline run does: the model is the exported one
        n_layers = gap.n_layers
        measured = gap.measure(model, lambda li, role: obj.applies(li, role, n_layers))
        ppl = evaluate_wikitext2(model, tok, max_tokens=2048, seqlen=2048, progress=False)["perplexity"]
        out[name] = (res, measured, ppl)
        del model
    return out


def test_fair_gptq_shrinks_the_held_out_pair_gap_of_its_targets(plain_and_fair):
    (_, g0, p0), (_, g1, p1) = plain_and_fair["plain"], plain_and_fair["fair"]
    targeted = [n for n, m in g1["modules"].items() if m["targeted"]]
    plain_ratio, fair_ratio = pooled_ratio(g0["modules"], targeted), pooled_ratio(g1["modules"], targeted)
    print(f"\nthreads {plain_and_fair['threads']}: held-out pair gap on the {len(targeted)} targeted modules: "
          f"plain GPTQ {plain_ratio:.4f}, Fair-GPTQ {fair_ratio:.4f} ({fair_ratio / plain_ratio:.4f} x); "
          f"WikiText-2 (2k tokens) {p0:.2f} -> {p1:.2f}")
    assert len(targeted) == 2 * len(select_layers(FAIR["layers"], 30))
    assert fair_ratio < MAX_GAP_VS_PLAIN * plain_ratio
    # untargeted modules are plain GPTQ's up to the propagated change of their inputs
    assert g1["ratio_untargeted"] == pytest.approx(g0["ratio_untargeted"], rel=0.05)
    assert p1 < 1.5 * p0


def test_only_targeted_modules_get_the_update_and_delta_is_reported(plain_and_fair):
    plain_res, fair_res = plain_and_fair["plain"][0], plain_and_fair["fair"][0]
    assert all(r.delta_w_rel is None and r.fair_mode is None for r in plain_res.reports)
    layers = set(select_layers(FAIR["layers"], 30))
    targeted = [r for r in fair_res.reports if r.role in ("attn_out", "mlp_out") and r.layer in layers]
    others = [r for r in fair_res.reports if r not in targeted]
    assert len(targeted) == 2 * len(layers) and len(others) == len(fair_res.reports) - len(targeted)
    assert all(r.fair_mode is not None and r.delta_w_rel > 0 for r in targeted)
    assert all(r.fair_mode is None and r.delta_w_rel is None for r in others)
    desc = fair_res.objectives[0]
    assert desc["pairs"] == N_PAIRS and desc["alpha"] == FAIR["alpha"] and len(desc["pairs_sha256_16"]) == 16
