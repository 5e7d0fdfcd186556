"""Fair-GPTQ on the real SmolLM2-135M: the acceptance check of the pair objective (issue 3).

Plain GPTQ and Fair-GPTQ share everything (bits, groups, the StereoSet pair sentences that
build H, seed); only the fairness term differs.  CrowS-Pairs is scored on the full file
(lm-eval protocol): Fair-GPTQ's pct_stereotype must be closer to 50 than plain GPTQ's, at a
WikiText-2 perplexity under 1.5 x plain GPTQ's.  Pairs come from the StereoSet part that the
StereoSet evaluation does not hold out, so calibration and evaluation never overlap.

Both models equal points of ``pipelines/smollm2_fairness_table.yaml`` (same pairs, CPU backend,
batch sizes) quantized on one thread: with H built from ~10k tokens of short sentences, GPTQ's
rounding is chaotic under a change of float summation order (a different thread count moves
the plain model's perplexity by ~2 and CrowS-Pairs by ~0.5), so the quantization is pinned to
one reproducible computation, the one the table reports.  Scoring is not chaotic (a forward
pass's summation order moves log-probabilities by ~1e-6), so it runs on all threads.
"""
from __future__ import annotations

import copy

import pytest

from fairgptq import QuantConfig, quantize_model
from fairgptq.backends import CpuBackend
from fairgptq.datasets_adapters.sampling import sample_pairs
from fairgptq.datasets_adapters.stereoset import load_stereoset
from fairgptq.evaluation.crows_pairs import evaluate_crows_pairs
from fairgptq.evaluation.perplexity import evaluate_wikitext2
from fairgptq.evaluation.stereoset import split_items
from fairgptq.export import snap_to_checkpoint_precision
from fairgptq.objectives.fair_pairs import FairPairObjective
from fairgptq.objectives.targets import select_layers

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

N_PAIRS, SEED = 256, 0
FAIR = {"alpha": 0.1, "mode": "exact", "layers": "upper"}
CONFIG = QuantConfig(bits=4, group_size=128, sym=True)


@pytest.fixture(scope="module")
def plain_and_fair(smollm2_base, real_data_dir) -> dict:
    base, tok = smollm2_base
    pairs = sample_pairs(split_items(load_stereoset(), "calibration", 0.5), n=N_PAIRS, seed=SEED)
    out = {}
    for name, alpha in (("plain", 0.0), ("fair", FAIR["alpha"])):
        model = copy.deepcopy(base)
        obj = FairPairObjective(pairs, **{**FAIR, "alpha": alpha}, max_length=64, pair_set="stereoset-intrasentence")
        res = quantize_model(model, None, CONFIG, objectives=[obj], tokenizer=tok, progress=False,
                             backend=CpuBackend(threads=1))
        snap_to_checkpoint_precision(model, res)  # as a pipeline run does: the model is the exported one
        crows = evaluate_crows_pairs(model, tok, batch_size=16, progress=False)
        ppl = evaluate_wikitext2(model, tok, max_tokens=16384, seqlen=2048, progress=False)["perplexity"]
        out[name] = (res, crows, ppl)
    return out


def test_fair_gptq_moves_crows_pairs_toward_50(plain_and_fair):
    (_, c0, p0), (res, c1, p1) = plain_and_fair["plain"], plain_and_fair["fair"]
    s0, s1 = c0["pct_stereotype"], c1["pct_stereotype"]
    print(f"\nCrowS-Pairs pct_stereotype: plain GPTQ {s0:.2f} (PPL {p0:.2f}) -> Fair-GPTQ {s1:.2f} (PPL {p1:.2f}) "
          f"[{FAIR}, {N_PAIRS} pairs, seed {SEED}]")
    assert abs(s1 - 50) < abs(s0 - 50)
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
