"""The linear term of the layer objective and the likelihood-directed objective (issue 24), on tiny models.

- the solve of every mode against a brute-force minimiser of the layer objective;
- the score and its gradient against the CrowS-Pairs scorer and finite differences;
- B on the calibration pairs falls by the predicted first-order amount for small λ (the error
  shrinking quadratically with λ);
- the sequential gradient sees earlier layers' rounding; "before" is plain GPTQ of the stepped model.
Tiny random models prove the maths and the plumbing only, never that debiasing works.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from fairgptq import QuantConfig, quantize_model
from fairgptq.core.architectures import arch_for
from fairgptq.core.backend import Backend
from fairgptq.core.errors import ConfigError
from fairgptq.core.gptq import apply_inverse, factor_hessian, fair_update_detailed, quantize_weight
from fairgptq.core.objective import FairSettings, ScoreRequest
from fairgptq.core.score_gradient import GradientPasses, score_gradient
from fairgptq.contract.pairs import Pair
from fairgptq.evaluation.crows_decomposition import evaluate_crows_decomposition
from fairgptq.evaluation.scoring import encode_request, score_requests
from fairgptq.objectives.likelihood_pairs import LikelihoodPairObjective, LikelihoodPairParams, score_batches
from fairgptq.contract.params import validated

from tiny_model import PAIRS, tiny_llama, token_batches

DAMP = 0.01
pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(rows=3, cols=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(cols, 40, generator=g, dtype=torch.float64)
    H = 2 * X @ X.T / 40
    D = torch.randn(cols, 3, generator=g, dtype=torch.float64)
    return (torch.randn(rows, cols, generator=g, dtype=torch.float64), H, D @ D.T * 0.5,
            torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.3)


def _brute_force(W, H, Hb, C):
    """argmin ½tr((W'−W)Hd(W'−W)ᵀ) + ½tr(W' Hb W'ᵀ) + ⟨C, W'−W⟩ by a generic optimiser (no closed form)."""
    Hd = (H + DAMP * torch.diagonal(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)).numpy()
    Wn, Hbn, Cn = W.numpy(), (np.zeros_like(Hd) if Hb is None else Hb.numpy()), C.numpy()

    def f(x):
        Wp = x.reshape(Wn.shape)
        E = Wp - Wn
        return 0.5 * np.sum((E @ Hd) * E) + 0.5 * np.sum((Wp @ Hbn) * Wp) + np.sum(Cn * E)

    res = minimize(f, Wn.ravel().copy(), method="BFGS", options={"gtol": 1e-10, "maxiter": 10000})
    return torch.from_numpy(res.x.reshape(Wn.shape))


@pytest.mark.parametrize("with_quadratic", [False, True])
@pytest.mark.parametrize("act_order", [False, True])
def test_exact_solve_is_the_brute_force_minimiser(with_quadratic, act_order):
    W, H, Hb, C = _problem(seed=1)
    Hb = Hb if with_quadratic else None
    upd = fair_update_detailed(W.float(), factor_hessian(H.float(), DAMP, act_order=act_order), None if Hb is None
                               else Hb.float(), "exact", linear=C.float())
    torch.testing.assert_close(upd.W.double(), _brute_force(W, H, Hb, C), rtol=1e-4, atol=1e-4)


def test_linear_term_alone_is_the_same_step_in_every_mode():
    W, H, _, C = _problem(seed=2)
    fh = factor_hessian(H.float(), DAMP)
    step = fair_update_detailed(W.float(), fh, None, "first_order", linear=C.float())
    torch.testing.assert_close(step.W.double(), _brute_force(W, H, None, C), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step.W, W.float() - apply_inverse(fh, C.float()))
    assert torch.equal(fair_update_detailed(W.float(), fh, None, "exact", linear=C.float()).W, step.W)


def test_first_order_with_both_terms_is_the_papers_update_plus_the_linear_step():
    W, H, Hb, C = _problem(seed=3)
    fh = factor_hessian(H.float(), DAMP)
    both = fair_update_detailed(W.float(), fh, Hb.float(), "first_order", linear=C.float()).W
    quadratic_only = fair_update_detailed(W.float(), fh, Hb.float(), "first_order").W
    torch.testing.assert_close(both, quadratic_only - apply_inverse(fh, C.float()), rtol=1e-5, atol=1e-6)


def test_in_loop_rounds_the_linear_step_under_h_plus_hbias():
    cfg = QuantConfig(bits=4, group_size=32)
    W, H, Hb, C = (t.float() for t in _problem(rows=8, cols=64, seed=4))
    sol = Backend().solve(W, H, Hb, cfg, FairSettings("in_loop"), module="m", linear=C)
    H_total = H + Hb
    target = W - apply_inverse(factor_hessian(H_total, DAMP), C)
    assert sol.fair.mode == "in_loop"
    assert torch.equal(sol.qweight.codes, quantize_weight(target, H_total, cfg).codes)


def test_a_linear_term_of_the_wrong_shape_is_refused():
    W, H, _, C = _problem(seed=5)
    with pytest.raises(ConfigError, match="linear term has shape"):
        fair_update_detailed(W.float(), factor_hessian(H.float(), DAMP), None, linear=C.float().T)


# ---------------------------------------------------------------------------------------------- the score


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_llama(layers=2)
    pairs = [Pair(s, a, "gender", source_id=str(i)) for i, (s, a) in enumerate(PAIRS)]
    calibration = token_batches(tok, [" ".join(["the man is a good doctor and she was very kind"] * 3)] * 8)
    return model, tok, pairs, calibration


def _B(model, tok, pairs, score="sentence"):
    batches, weights, _ = score_batches(pairs, tok, score=score, batch_size=3)
    return score_gradient(model, ScoreRequest(batches, weights), {}, arch_for(model), torch.device("cpu")).value


def test_the_score_is_the_crows_pairs_likelihood_preference(tiny):
    model, tok, pairs, _ = tiny
    stereo = score_requests(model, [encode_request(tok, "", p.stereo) for p in pairs], batch_size=4, progress=False)
    anti = score_requests(model, [encode_request(tok, "", p.anti) for p in pairs], batch_size=4, progress=False)
    expected = float(np.mean([a.logprob - b.logprob for a, b in zip(stereo, anti)]))
    assert _B(model, tok, pairs) == pytest.approx(expected, abs=1e-5)
    parts = evaluate_crows_decomposition(model, tok, pairs, batch_size=4, progress=False)
    assert _B(model, tok, pairs, "span") == pytest.approx(parts["span_diff"], abs=1e-5)


def test_the_gradient_matches_finite_differences(tiny):
    model, tok, pairs, _ = tiny
    model = copy.deepcopy(model).double()
    batches, weights, _ = score_batches(pairs, tok, batch_size=3)
    name = "model.layers.1.mlp.down_proj"
    module = model.get_submodule(name)
    flags = [p.requires_grad for p in model.parameters()]
    G = score_gradient(model, ScoreRequest(batches, weights), {name: module}, arch_for(model),
                       torch.device("cpu")).grads[name]
    assert [p.requires_grad for p in model.parameters()] == flags  # the model is left as it was
    assert all(p.grad is None for p in model.parameters())
    i, j = divmod(int(G.abs().argmax()), G.shape[1])
    eps = 1e-3
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            module.weight[i, j] += sign * eps
        values.append(score_gradient(model, ScoreRequest(batches, weights), {}, arch_for(model),
                                     torch.device("cpu")).value)
        with torch.no_grad():
            module.weight[i, j] -= sign * eps
    assert (values[0] - values[1]) / (2 * eps) == pytest.approx(float(G[i, j]), rel=2e-2)


def _step_then_B(tiny, lam):
    """B₀, the predicted first-order ΔB and the real B after the objective's step on the float model."""
    model, tok, pairs, calibration = tiny
    model = copy.deepcopy(model)
    obj = LikelihoodPairObjective(pairs, when="before", **{"lambda": lam})
    spec = arch_for(model)
    layers = model.get_submodule(spec.layers)
    targets = [(li, role, f"model.layers.{li}.{n}", layers[li].get_submodule(n)) for li in range(len(layers))
               for role in ("attn_out", "mlp_out") for n in spec.roles[role]]
    GradientPasses(model, spec, len(layers), [obj], tok, targets, torch.device("cpu")).on_float_model(
        calibration, Backend(), QuantConfig(damp=DAMP))
    for name, delta in obj.float_model_update().items():
        module = model.get_submodule(name)
        with torch.no_grad():
            module.weight += delta
    measured = obj.describe()
    return measured["calibration_preference"], measured["predicted_change"], _B(model, tok, pairs)


def test_b_falls_by_the_predicted_first_order_amount_for_small_lambda(tiny):
    errors = []
    for lam in (2e-6, 1e-6):
        B0, predicted, B1 = _step_then_B(tiny, lam)
        assert predicted < 0 and B1 < B0
        assert (B1 - B0) == pytest.approx(predicted, rel=0.05)
        errors.append(abs((B1 - B0) - predicted))
    assert errors[1] < errors[0] / 2.5  # second-order remainder: a quarter when λ halves


def test_target_removes_that_fraction_of_the_preference_to_first_order(tiny):
    model, tok, pairs, calibration = tiny
    obj = LikelihoodPairObjective(pairs, target=0.5)
    result = quantize_model(copy.deepcopy(model), calibration, QuantConfig(bits=8, group_size=32), objectives=[obj],
                            tokenizer=tok, progress=False)
    measured = obj.describe()
    per_module = [r.score_change_pre_update for r in result.reports if r.score_change_pre_update is not None]
    assert len(per_module) == 4 and all(v * measured["calibration_preference"] < 0 for v in per_module)
    # each module's step, sized with its own H, removes its share: together the target's fraction
    assert sum(per_module) == pytest.approx(-0.5 * measured["calibration_preference"], rel=1e-3)
    assert all(r.score_change_quantized is not None for r in result.reports if r.role in ("attn_out", "mlp_out"))


def test_sequential_gradient_is_taken_on_the_partially_quantized_model(tiny):
    model, tok, pairs, calibration = tiny
    obj = LikelihoodPairObjective(pairs, target=0.5, gradient="sequential")
    quantize_model(copy.deepcopy(model), calibration, QuantConfig(bits=4, group_size=32), objectives=[obj],
                   tokenizer=tok, progress=False)
    measured = obj.describe()
    by_layer = measured["preference_by_layer"]
    assert sorted(by_layer) == [0, 1]
    assert by_layer[0] == pytest.approx(measured["calibration_preference"], abs=1e-6)  # nothing rounded yet
    assert by_layer[1] != pytest.approx(measured["calibration_preference"], abs=1e-6)  # layer 0 was


def test_before_is_plain_gptq_of_the_stepped_float_model(tiny):
    model, tok, pairs, calibration = tiny
    cfg = QuantConfig(bits=4, group_size=32)
    obj = LikelihoodPairObjective(pairs, target=0.5, when="before")
    debiased = copy.deepcopy(model)
    result = quantize_model(debiased, calibration, cfg, objectives=[obj], tokenizer=tok, progress=False)
    assert all(r.fair_mode is None for r in result.reports)  # no term during quantization
    stepped = copy.deepcopy(model)
    for name, delta in obj.float_model_update().items():
        with torch.no_grad():
            stepped.get_submodule(name).weight += delta
    plain = quantize_model(stepped, calibration, cfg, progress=False)
    for name, qw in plain.qweights.items():
        assert torch.equal(qw.codes, result.qweights[name].codes), name


def test_an_onloaded_run_refuses_a_score_gradient(tiny, tmp_path):
    from fairgptq.onload.quantize import quantize_onloaded
    model, tok, pairs, calibration = tiny
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="one decoder layer at a time"):
        quantize_onloaded(tmp_path / "m", tmp_path / "out", calibration, QuantConfig(bits=4, group_size=32),
                          objectives=[LikelihoodPairObjective(pairs, target=0.5)], tokenizer=tok, progress=False)


def test_settings_one_strength_and_a_plain_twin():
    p = validated(LikelihoodPairParams, {"lambda": 0.2}, "x")
    assert p.target is None and p.lambda_ == 0.2 and p.dump()["lambda"] == 0.2 and not p.is_off()
    assert p.without_term().is_off() and p.without_term().roles == p.roles
    assert validated(LikelihoodPairParams, {}, "x").target == 0.5
    with pytest.raises(ConfigError, match="not both"):
        validated(LikelihoodPairParams, {"lambda": 0.2, "target": 0.5}, "x")
    assert validated(LikelihoodPairParams, {"target": 1.5}, "x").target == 1.5  # past the calibration pairs' parity
    assert validated(LikelihoodPairParams, {"target": "auto"}, "x").auto
    for bad in (-0.5, "half", float("inf")):
        with pytest.raises(ConfigError, match="target"):
            validated(LikelihoodPairParams, {"target": bad}, "x")
    with pytest.raises(ConfigError, match="auto_grid"):
        validated(LikelihoodPairParams, {"target": "auto", "auto_grid": [1.0, 2.0]}, "x")  # no 0: no reference
    with pytest.raises(ConfigError, match="sequential"):
        validated(LikelihoodPairParams, {"when": "before", "gradient": "sequential"}, "x")
    assert validated(LikelihoodPairParams, {"target": 0}, "x").is_off()


def test_a_pipeline_takes_lambda_by_its_name_and_its_saved_config_validates_again(tmp_path):
    """``lambda`` is the setting's name (the field is ``lambda_``): a pipeline that writes it, and the resolved
    config a run saves, must validate (a sweep's --reuse re-validates saved configs to match points)."""
    import yaml
    from fairgptq.pipeline import load_pipeline
    from fairgptq.pipeline.loading import validate
    from fairgptq.pipeline.messages import PipelineError
    from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "m"), write_pair_file(tmp_path / "p.jsonl"))
    raw["calibration"]["text"] = {"path": str(tmp_path / "t.txt"), "n": 2, "seqlen": 16}
    (tmp_path / "t.txt").write_text("the doctor said the nurse was kind " * 40)
    raw["objectives"] = [{"name": "likelihood_pairs", "pairs": raw["objectives"][0]["pairs"],
                          "params": {"lambda": 0.3}}]
    pipe = load_pipeline(write_yaml(tmp_path / "l.yaml", raw))
    resolved = pipe.resolved()
    assert resolved["objectives"][0]["params"]["lambda"] == 0.3 and "lambda_" not in resolved["objectives"][0]["params"]
    again = validate(yaml.safe_load(yaml.safe_dump(resolved)), "saved", environment=False)
    assert again.model_dump(mode="json")["objectives"][0]["params"] == resolved["objectives"][0]["params"]
    raw["objectives"][0]["params"] = {"lamda": 0.3}
    with pytest.raises(PipelineError, match=r"unknown setting\(s\) \['lamda'\].*lambda,"):
        load_pipeline(write_yaml(tmp_path / "typo.yaml", raw))


def test_identity_metric_takes_the_plain_gradient_step(tiny):
    model, tok, pairs, calibration = tiny
    obj = LikelihoodPairObjective(pairs, target=0.5, metric="identity")
    result = quantize_model(copy.deepcopy(model), calibration, QuantConfig(bits=8, group_size=32), objectives=[obj],
                            tokenizer=tok, progress=False)
    measured = obj.describe()
    lams = set(round(v, 12) for v in measured["lambda_by_module"].values())
    assert len(lams) == 1  # one λ = target · B₀ / Σ‖G‖² for every module
    per_module = [r.score_change_pre_update for r in result.reports if r.score_change_pre_update is not None]
    assert sum(per_module) == pytest.approx(-0.5 * measured["calibration_preference"], rel=1e-3)


def test_apply_damped_inverts_apply_inverse():
    from fairgptq.core.gptq import apply_damped
    W, H, _, C = _problem(rows=4, cols=12, seed=6)
    for act_order in (False, True):
        fh = factor_hessian(H.float(), DAMP, act_order=act_order)
        torch.testing.assert_close(apply_inverse(fh, apply_damped(fh, C.float())), C.float(), rtol=1e-3, atol=1e-4)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none here)")


@needs_cuda
@pytest.mark.parametrize("with_quadratic", [False, True])
def test_cuda_backend_solves_the_linear_term_as_the_cpu_does(with_quadratic):
    from fairgptq.backends.cuda import CudaBackend
    cfg = QuantConfig(bits=4, group_size=32)
    W, H, Hb, C = (t.float() for t in _problem(rows=16, cols=64, seed=7))
    Hb = Hb if with_quadratic else None
    backend = CudaBackend()
    with backend.activate():
        got = backend.solve(W, H, Hb, cfg, FairSettings("exact"), module="m", linear=C)
    ref = Backend().solve(W, H, Hb, cfg, FairSettings("exact"), module="m", linear=C)
    assert got.qweight.codes.is_cuda
    torch.testing.assert_close(got.fair.W.cpu(), ref.fair.W, rtol=1e-4, atol=1e-5)
    assert float((got.qweight.codes.cpu() != ref.qweight.codes).float().mean()) < 0.01


@needs_cuda
@pytest.mark.parametrize("metric", ["hessian", "identity"])
def test_likelihood_objective_on_a_model_on_the_gpu(tiny, metric):
    from fairgptq.backends.cuda import CudaBackend
    model, tok, pairs, calibration = tiny
    runs = {}
    for device, backend in (("cpu", Backend()), ("cuda", CudaBackend())):
        obj = LikelihoodPairObjective(pairs, target=0.5, metric=metric)
        result = quantize_model(copy.deepcopy(model).to(device), calibration, QuantConfig(bits=4, group_size=32),
                                objectives=[obj], tokenizer=tok, backend=backend, progress=False)
        runs[device] = (obj.describe(), sum(r.score_change_pre_update for r in result.reports
                                            if r.score_change_pre_update is not None))
    (cpu, cpu_pred), (gpu, gpu_pred) = runs["cpu"], runs["cuda"]
    assert gpu["calibration_preference"] == pytest.approx(cpu["calibration_preference"], rel=1e-3, abs=1e-4)
    assert gpu_pred == pytest.approx(-0.5 * gpu["calibration_preference"], rel=1e-3)
    assert gpu_pred == pytest.approx(cpu_pred, rel=2e-2)


def test_sequential_refresh_every_k_layers(tiny):
    model, tok, pairs, calibration = tiny
    model4 = tiny_llama(layers=4)[0]
    obj = LikelihoodPairObjective(pairs, target=0.5, gradient="sequential", refresh=2)
    quantize_model(model4, calibration, QuantConfig(bits=4, group_size=32), objectives=[obj], tokenizer=tok,
                   progress=False)
    assert sorted(obj.describe()["preference_by_layer"]) == [0, 2]  # one pass for layers 0-1, one for 2-3


@pytest.mark.parametrize("metric", ["hessian", "identity"])
def test_a_given_lambda_works_in_both_metrics(tiny, metric):
    # issue 35: lambda with metric: hessian validated, then always stopped at quantization ("the Hessian metric
    # needs the float model's Hessians here"): only a target needs the float model's Hessians
    model, tok, pairs, calibration = tiny
    obj = LikelihoodPairObjective(pairs, metric=metric, **{"lambda": 1e-6})
    result = quantize_model(copy.deepcopy(model), calibration, QuantConfig(bits=8, group_size=32), objectives=[obj],
                            tokenizer=tok, progress=False)
    assert set(obj.describe()["lambda_by_module"].values()) == {1e-6}
    assert all(r.score_change_pre_update < 0 for r in result.reports if r.score_change_pre_update is not None)


@pytest.mark.parametrize("settings", [{"lambda": 1e30}, {"lambda": 1e30, "metric": "identity"},
                                      {"lambda": 1e30, "when": "before"}, {"lambda": 1e6}])
def test_a_huge_lambda_is_refused_for_what_it_does(tiny, settings):
    # it used to surface layers later as "half precision" or "the Hessian is all zero"
    model, tok, pairs, calibration = tiny
    obj = LikelihoodPairObjective(pairs, **settings)
    with pytest.raises(ConfigError, match=r"lambda 1e\+\d+ steps .* times past parity.*Lower lambda, or give target"):
        quantize_model(copy.deepcopy(model), calibration, QuantConfig(bits=4, group_size=32), objectives=[obj],
                       tokenizer=tok, progress=False)
# ---------------------------------------------------------------------------------------------- target: auto


def _gender_pairs() -> list[Pair]:
    """56 pairs differing only in he / she: the tiny model's preference between the two words is shared by
    every pair, so the calibration half's step moves the validation half's share from 100 % to 0 %."""
    import itertools
    words = itertools.product(["is", "was"], ["good", "bad", "smart", "kind", "lazy", "strong", "weak"],
                              ["doctor", "nurse", "engineer", "teacher"])
    return [Pair(f"he {v} a {a} {n}", f"she {v} a {a} {n}", "gender", source_id=str(i))
            for i, (v, a, n) in enumerate(words)]


@pytest.mark.parametrize("metric", ["identity", "hessian"])
def test_auto_chooses_the_validation_optimum_of_a_planted_preference(tiny, metric):
    from fairgptq.objectives.likelihood_pairs import in_validation
    model, tok, _, calibration = tiny
    pairs = _gender_pairs()
    grid = [x / 4 for x in range(17)]
    obj = LikelihoodPairObjective(pairs, target="auto", metric=metric, validation_fraction=0.5, auto_grid=grid,
                                  auto_tolerance=0.05)
    steps, step_at = {}, obj.step_at
    obj.step_at = lambda t: steps.setdefault(t, step_at(t))  # the steps the probe took, to re-apply below
    quantize_model(copy.deepcopy(model), calibration, QuantConfig(bits=8, group_size=32), objectives=[obj],
                   tokenizer=tok, progress=False)
    auto = obj.describe()["auto"]
    validation = [p for p in pairs if in_validation(p, 0.5)]
    assert auto["grid"] == grid and auto["validation_pairs"] == len(validation) and 0 < len(validation) < len(pairs)
    assert auto["fit_pairs"] + auto["validation_pairs"] == len(pairs)
    # the curve recomputed independently: each grid step applied to the float model, the validation pairs
    # scored by the CrowS-Pairs scorer
    shares = []
    for t in grid:
        stepped = copy.deepcopy(model)
        with torch.no_grad():
            for name, delta in steps[t].items():
                stepped.get_submodule(name).weight += delta
        st = score_requests(stepped, [encode_request(tok, "", p.stereo) for p in validation], batch_size=8,
                            progress=False)
        an = score_requests(stepped, [encode_request(tok, "", p.anti) for p in validation], batch_size=8,
                            progress=False)
        shares.append(100.0 * float(np.mean([a.logprob > b.logprob for a, b in zip(st, an)])))
    assert [c["validation_pct_stereotype"] for c in auto["curve"]] == pytest.approx(shares)
    assert shares[0] > 90 and shares[-1] < 10  # the planted preference, removed and then reversed along the step
    optimum = grid[min(range(len(grid)), key=lambda i: (abs(shares[i] - 50), grid[i]))]
    assert all(c["perplexity_ratio"] <= 1.05 for c in auto["curve"])  # the control allows every point here
    assert auto["chosen"] == optimum == obj.describe()["target_chosen"] and 0 < optimum < grid[-1]


def test_auto_stays_within_the_controls_tolerance():
    from fairgptq.objectives.likelihood_pairs import choose_target
    curve = [{"target": t, "distance": d, "perplexity_ratio": r}
             for t, d, r in [(0, 20, 1.0), (1, 8, 1.004), (2, 1, 1.02), (3, 0.5, 1.08), (4, 1, 1.2)]]
    assert choose_target(curve, 0.01)["target"] == 1
    assert choose_target(curve, 0.05)["target"] == 2
    assert choose_target(curve, 0.10)["target"] == 3
    tie = [{"target": t, "distance": 2.0, "perplexity_ratio": 1.0} for t in (0.5, 0, 1)]
    assert choose_target(tie, 0.0)["target"] == 0  # ties: the least change


def test_auto_uses_a_validation_split_of_the_calibration_pairs_not_the_evaluation_hash():
    """The calibration pairs are one side of the evaluation split's hash; the validation hash is salted, so
    it splits them instead of putting all of them on one side."""
    from fairgptq.datasets_adapters.splits import in_holdout
    from fairgptq.objectives.likelihood_pairs import in_validation
    pairs = [Pair(f"a{i}", f"b{i}", "x", source_id=f"id{i}") for i in range(400)]
    calibration = [p for p in pairs if not in_holdout(p.source_id, 0.5)]
    held = sum(in_validation(p, 0.25) for p in calibration)
    assert 0.15 * len(calibration) < held < 0.35 * len(calibration)
    with pytest.raises(ConfigError, match="validation_fraction"):
        LikelihoodPairObjective(pairs[:1], target="auto")
