"""Both built-in objectives on the routed experts of a mixture-of-experts model (tiny random models, no download).

docs/architectures.md ("Objectives on routed experts") defines the terms: fair_pairs' D on an expert is the
difference of its captured inputs (zero where a token was routed elsewhere) at the pair's aligned
positions; likelihood_pairs' G is the expert's slice of the fused tensor's score gradient, its step sized
with the expert's own H.  Here: every routed expert's down projection gets a pre-update and the model
exports and reloads; the run's H_bias on an expert is built from the D computed independently from
transformers' own routing and its pre-update lowers ‖W_e D‖; the likelihood step moves the preference
towards parity on every expert, and its gradient is the directional derivative of the score; an expert
no pair token reaches gets no H_bias and its report says so; the held-out pair gap measures every
expert with the same D.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fairgptq import QuantConfig, export_checkpoint, quantize_model
from fairgptq.contract import Pair
from fairgptq.core import backend as core_backend
from fairgptq.core import driver as core_driver
from fairgptq.core.experts import RoutedSlice, routed_slice
from fairgptq.core.score_gradient import score_gradient
from fairgptq.core.architectures import arch_for
from fairgptq.export import load_gptq_checkpoint
from fairgptq.objectives.fair_pairs import FairPairObjective
from fairgptq.objectives.likelihood_pairs import LikelihoodPairObjective
from fairgptq.objectives.pair_activations import pair_differences
from fairgptq.core.objective import Captured

from tiny_families import moe_configs, tiny_model
from tiny_model import PAIRS, tiny_tokenizer, token_batches

pytestmark = pytest.mark.usefixtures("one_thread")

MOE = moe_configs()
#: natural column order, named: nothing here may depend on another engineer's default
CONFIG = QuantConfig(bits=4, group_size=32, act_order=False, act_group_aware=False)


def _pairs() -> list[Pair]:
    return [Pair(s, a, "gender", source_id=f"t:{i}") for i, (s, a) in enumerate(PAIRS)]


def _calibration(tok):
    return token_batches(tok, [s for p in PAIRS for s in p])


def _downs(li: int, n: int = 4) -> list[str]:
    return [f"model.layers.{li}.mlp.experts.down_proj_per_expert.{e}" for e in range(n)]


@pytest.mark.parametrize("family", sorted(MOE))
def test_both_objectives_reach_every_routed_expert_and_the_export_reloads(family, tmp_path):
    model, tok = tiny_model(MOE[family]), tiny_tokenizer()
    roles = ("attn_out", "mlp_out")
    fair = FairPairObjective(_pairs(), alpha=0.1, roles=roles, mode="exact")
    likelihood = LikelihoodPairObjective(_pairs(), target=0.5, roles=roles, max_length=16)
    result = quantize_model(model, _calibration(tok), CONFIG, objectives=[fair, likelihood], tokenizer=tok,
                            progress=False)
    reports = {r.name: r for r in result.reports}
    for li in range(2):
        for name in _downs(li):
            r = reports[name]
            assert r.fair_mode == "exact" and r.delta_w_rel > 0 and r.hbias_trace_ratio > 0, name
            assert r.fair_skipped is None and r.routed_tokens > 0, name
            assert name in likelihood.describe()["lambda_by_module"], name
        if family == "qwen2_moe":  # the shared expert is a dense MLP: its down projection takes both terms too
            shared = reports[f"model.layers.{li}.mlp.shared_expert.down_proj"]
            assert shared.hbias_trace_ratio > 0 and shared.score_change_pre_update is not None
    export_checkpoint(model, tok, result, tmp_path)
    loaded, _, _ = load_gptq_checkpoint(tmp_path, dtype="float32")
    for name in _downs(0) + _downs(1):
        assert torch.equal(routed_slice(loaded, name), result.qweights[name].dequantize()), name
    ids = tok(["the woman is a good engineer and the man is a kind nurse"], return_tensors="pt").input_ids
    with torch.no_grad():
        ours, theirs = model(ids).logits, loaded(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), float((ours - theirs).abs().max())


def _routed_down_inputs(model, batches) -> list[list[torch.Tensor]]:
    """Each expert's down-projection input per batch, from transformers' own routing of layer 0: act(gate) * up
    on the tokens routed to the expert, zero on the others (computed here from the fused float weights)."""
    experts, seen = model.model.layers[0].mlp.experts, []
    handle = experts.register_forward_pre_hook(lambda m, args: seen.append((args[0].detach(), args[1].detach())))
    with torch.no_grad():
        for b in batches:
            model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    handle.remove()
    out = []
    for e in range(experts.gate_up_proj.shape[0]):
        per_batch = []
        for x, top_k in seen:
            routed = (top_k == e).any(-1, keepdim=True).to(x.dtype)
            gate, up = F.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
            per_batch.append((experts.act_fn(gate) * up * routed).detach())
        out.append(per_batch)
    return out


def test_the_fair_term_on_an_expert_is_built_from_its_routed_pair_differences_and_lowers_them(monkeypatch):
    """Only the routed down projections are quantized, so layer 0's expert inputs are the float model's: the run's
    H_bias must be (2α/P) Σ D Dᵀ of D computed independently, and the pre-update must lower ‖W_e D‖."""
    model, tok = tiny_model(MOE["mixtral"]), tiny_tokenizer()
    float_model = copy.deepcopy(model)
    fair = FairPairObjective(_pairs(), alpha=0.5, roles=("mlp_out",), mode="exact")
    terms, updated = {}, {}
    quadratic, solve = core_driver._quadratic_terms, core_backend.Backend.solve

    def record_terms(li, role, captured, objectives, module):
        H_bias, settings = quadratic(li, role, captured, objectives, module)
        terms[module] = H_bias
        return H_bias, settings

    def record_solve(self, W, *args, module, **kwargs):
        W0 = W.float().clone()
        sol = solve(self, W, *args, module=module, **kwargs)
        updated[module] = (W0, None if sol.fair is None else sol.fair.W.float().clone())
        return sol

    monkeypatch.setattr(core_driver, "_quadratic_terms", record_terms)
    monkeypatch.setattr(core_backend.Backend, "solve", record_solve)
    quantize_model(model, _calibration(tok), CONFIG, objectives=[fair], tokenizer=tok, roles=("mlp_out",),
                   progress=False)
    streams = fair._streams
    stereo, anti = _routed_down_inputs(float_model, streams.stereo), _routed_down_inputs(float_model, streams.anti)
    for e, name in enumerate(_downs(0)):
        D = torch.cat([pair_differences(Captured(x0, b0.attention_mask), Captured(x1, b1.attention_mask), plan)
                       for x0, x1, b0, b1, plan in zip(stereo[e], anti[e], streams.stereo, streams.anti,
                                                       streams.plans)])
        assert D.abs().sum() > 0, name
        expected = D.T @ D * (2 * 0.5 / len(_pairs()))
        assert torch.allclose(terms[name], expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max())), name
        W0, W_pre = updated[name]
        assert torch.equal(W0, float_model.model.layers[0].mlp.experts.down_proj[e])  # the float weight
        assert torch.linalg.norm(W_pre @ D.T) < 0.95 * torch.linalg.norm(W0 @ D.T), name


def test_an_expert_no_pair_token_reaches_gets_no_pair_term_and_says_so():
    model, tok = tiny_model(MOE["mixtral"]), tiny_tokenizer()

    def never_expert_3(module, args, out):
        logits, scores, index = out
        return logits, scores, torch.where(index == 3, (index + 1) % 3, index)

    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(never_expert_3)
    fair = FairPairObjective(_pairs(), alpha=0.1, roles=("mlp_out",), mode="exact")
    result = quantize_model(model, _calibration(tok), CONFIG, objectives=[fair], tokenizer=tok, progress=False)
    reports = {r.name: r for r in result.reports}
    for li in range(2):
        *reached, unreached = (reports[n] for n in _downs(li))
        assert unreached.fair_mode is None and unreached.hbias_trace_ratio is None
        assert "every pair difference at this module's input is 0" in unreached.fair_skipped
        assert all(r.fair_mode == "exact" and r.delta_w_rel > 0 and r.fair_skipped is None for r in reached)


@pytest.mark.parametrize("family,metric", [("mixtral", "hessian"), ("olmoe", "hessian"), ("olmoe", "identity")])
def test_the_likelihood_step_moves_every_expert_towards_parity(family, metric):
    """Per expert, on both of its matrices: the first-order change of B by the pre-update has B₀'s opposite sign."""
    model, tok = tiny_model(MOE[family]), tiny_tokenizer()
    likelihood = LikelihoodPairObjective(_pairs(), target=0.5, roles=("mlp_in", "mlp_out"), max_length=16,
                                         metric=metric)
    result = quantize_model(model, _calibration(tok), CONFIG, objectives=[likelihood], tokenizer=tok,
                            progress=False)
    b0 = likelihood.describe()["calibration_preference"]
    routed = [r for r in result.reports if r.routed_tokens is not None]
    assert len(routed) == 16 and b0 != 0
    for r in routed:
        assert r.score_change_pre_update * b0 < 0, (r.name, r.score_change_pre_update, b0)
        assert likelihood.describe()["lambda_by_module"][r.name] * b0 > 0, r.name  # λ carries B₀'s sign
    # target splits over the experts' 16 matrices (shares from each one's float H) and each removes its share
    total = sum(r.score_change_pre_update for r in routed)
    assert total == pytest.approx(-0.5 * b0, rel=1e-3)


def test_an_expert_s_gradient_is_the_directional_derivative_of_the_score():
    """G of one expert's slice (through transformers' routing) against a central difference of S along G."""
    model, tok = tiny_model(MOE["olmoe"]), tiny_tokenizer()
    likelihood = LikelihoodPairObjective(_pairs(), **{"lambda": 1.0}, roles=("mlp_out",), max_length=16)
    request = likelihood.score_request(tok)
    spec, experts = arch_for(model), model.model.layers[1].mlp.experts
    name = "model.layers.1.mlp.experts.down_proj_per_expert.2"
    grad = score_gradient(model, request, {name: RoutedSlice(experts.down_proj, 2)}, spec, torch.device("cpu"))
    G = grad.grads[name]
    assert G.abs().sum() > 0 and experts.down_proj.grad is None
    direction, eps, values = G / torch.linalg.norm(G), 1e-2, []
    for sign in (1, -1):
        with torch.no_grad():
            experts.down_proj[2] += sign * eps * direction
        values.append(score_gradient(model, request, {}, spec, torch.device("cpu")).value)
        with torch.no_grad():
            experts.down_proj[2] -= sign * eps * direction
    numeric = (values[0] - values[1]) / (2 * eps)
    assert numeric == pytest.approx(float(torch.linalg.norm(G)), rel=1e-3)


def test_debias_then_quantize_steps_every_expert_of_the_float_model(monkeypatch):
    """``when: before``: the step, sized with each expert's float H, is written into the fused tensors' slices."""
    model, tok = tiny_model(MOE["qwen3_moe"]), tiny_tokenizer()
    float_downs = model.model.layers[1].mlp.experts.down_proj.detach().clone()
    likelihood = LikelihoodPairObjective(_pairs(), target=0.5, roles=("mlp_out",), max_length=16, when="before")
    stepped = {}
    apply = core_driver._apply_float_updates

    def record(model, spec, objectives):
        apply(model, spec, objectives)
        stepped.update({n: routed_slice(model, n).clone() for n in _downs(1)})

    monkeypatch.setattr(core_driver, "_apply_float_updates", record)
    quantize_model(model, _calibration(tok), CONFIG, objectives=[likelihood], tokenizer=tok, progress=False)
    measured = likelihood.describe()
    assert measured["predicted_change"] == pytest.approx(-0.5 * measured["calibration_preference"], rel=1e-4)
    for e, name in enumerate(_downs(1)):
        delta = likelihood._before[name]
        assert delta.abs().sum() > 0, name
        assert torch.allclose(stepped[name], float_downs[e] + delta, atol=1e-6), name


def test_an_expert_s_flattened_rows_are_counted_per_sentence():
    """The MoE block hands an expert (batch·seq, in) rows: H is normalised per sentence, as a dense module's."""
    from fairgptq.core.hessian import HessianAccumulator

    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2] = False  # an all-padding row is no sentence
    mask[1, 3:] = False
    dense, routed = HessianAccumulator(8), HessianAccumulator(8)
    dense.add(x, mask)
    routed.add(x.reshape(15, 8), mask)
    assert routed.sentences == dense.sentences == 2 and torch.equal(routed.hessian(), dense.hessian())


def test_an_outside_objective_reads_an_expert_s_input_as_batch_seq_in(monkeypatch):
    """The example plugin's term (per-sentence means of (batch, seq, in) inputs) reaches every routed expert."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "plugins"))
    from group_contrast_hbias import GroupContrastObjective

    model, tok = tiny_model(MOE["olmoe"]), tiny_tokenizer()
    contrast = GroupContrastObjective(group_a=[p[0] for p in PAIRS], group_b=[p[1] for p in PAIRS], alpha=0.1,
                                      roles=["mlp_in", "mlp_out"], mode="exact")
    result = quantize_model(model, _calibration(tok), CONFIG, objectives=[contrast], tokenizer=tok, progress=False)
    routed = [r for r in result.reports if r.routed_tokens is not None]
    assert len(routed) == 16 and all(r.hbias_trace_ratio > 0 and r.delta_w_rel > 0 for r in routed)


def test_the_held_out_pair_gap_measures_every_routed_expert():
    """PairGap's D on an expert is the objectives' D; the fair term lowers the gap it passes on below plain GPTQ's."""
    from fairgptq.evaluation.pair_gap import PairGap

    tok, pairs = tiny_tokenizer(), _pairs()
    gaps = {}
    for alpha in (0.0, 1.0):
        model = tiny_model(MOE["qwen2_moe"])
        gap = PairGap(model, tok, pairs, ("mlp_out",), progress=False)
        assert {m.name for m in gap.modules} == set(_downs(0) + _downs(1)) | {
            f"model.layers.{li}.mlp.shared_expert.down_proj" for li in range(2)}
        assert all(r["ratio"] == 1.0 for r in gap.measure(model)["modules"].values())  # the float model itself
        fair = FairPairObjective(pairs, alpha=alpha, roles=("mlp_out",), mode="exact")
        quantize_model(model, _calibration(tok), CONFIG, objectives=[fair], tokenizer=tok, progress=False)
        gaps[alpha] = gap.measure(model, targeted=lambda layer, role: role == "mlp_out")["ratio_targeted"]
    assert gaps[1.0] < 0.9 * gaps[0.0], gaps


def test_the_target_split_weighs_each_expert_with_its_own_float_hessian():
    """The split's share of an expert is tr(G H_e⁻¹ Gᵀ) with H_e from the first calibration batch's tokens routed
    to it (per sentence, pad excluded), computed here from transformers' own routing."""
    from fairgptq.core.gptq import apply_inverse, factor_for

    model, tok = tiny_model(MOE["mixtral"]), tiny_tokenizer()
    float_model, calibration = copy.deepcopy(model), _calibration(tok)
    likelihood = LikelihoodPairObjective(_pairs(), target=0.5, roles=("mlp_out",), max_length=16)
    quantize_model(model, calibration, CONFIG, objectives=[likelihood], tokenizer=tok, progress=False)
    first = calibration[0]
    mask = first.attention_mask.bool().reshape(-1)
    for e, x in enumerate(_routed_down_inputs(float_model, [first])):
        rows = x[0][mask]
        H = rows.T @ rows * (2.0 / first.input_ids.shape[0])
        G = likelihood._grads[_downs(0)[e]]
        expected = float((G * apply_inverse(factor_for(H, CONFIG, module="test"), G)).sum())
        assert likelihood._traces[_downs(0)[e]] == pytest.approx(expected, rel=1e-3), e
