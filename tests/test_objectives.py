"""The Fair-GPTQ pair objective: alignment, H_bias normalisation, targets, α = 0 identity."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fairgptq import QuantConfig, quantize_model
from fairgptq.core.errors import ConfigError
from fairgptq.core.objective import Captured, Objective, ObjectiveParams, TokenBatch
from fairgptq.contract.pairs import Pair
from fairgptq.contract import pairs_hash
from fairgptq.objectives.fair_pairs import FairPairObjective, MatrixObjective
from fairgptq.objectives.pair_activations import pair_differences, plan_alignment
from fairgptq.contract.targets import TargetParams, default_subset_size, select_layers


class CharTokenizer:
    """Whitespace tokenizer over a fixed vocabulary: enough to drive tiny models deterministically."""

    pad_token_id = 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, truncation: bool = False, max_length: int | None = None):
        ids = [1] + [self.vocab.setdefault(w, 2 + len(self.vocab) % 120) for w in text.split()]
        return type("Enc", (), {"input_ids": ids[:max_length] if truncation and max_length else ids})()


def tiny_llama(layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


PAIRS = [Pair(f"the {g} nurse was kind today", f"the {h} nurse was kind today", "gender", source_id=str(i))
         for i, (g, h) in enumerate([("woman", "man"), ("girl", "very tall boy"), ("mother", "father")] * 4)]


def test_positional_alignment_compares_only_real_tokens():
    plan = plan_alignment([[1, 2, 3, 4]], [[1, 5, 3]], seq0=6, seq1=6, mode="positional")
    assert plan.tok0.tolist() == [0, 1, 2] and plan.tok1.tolist() == [0, 1, 2]
    assert plan.n_spans == 0


def test_aligned_mode_matches_suffix_from_the_end_and_averages_the_span():
    # stereo: a b X Y c d ; anti: a b Z c d  -> prefix 2, suffix 2, spans [2,4) vs [2,3)
    a, b = [1, 2, 10, 11, 3, 4], [1, 2, 20, 3, 4]
    plan = plan_alignment([a], [b], seq0=6, seq1=7, mode="aligned")
    assert sorted(plan.tok0.tolist()) == [4, 5] and sorted(plan.tok1.tolist()) == [3, 4]
    assert plan.n_spans == 1 and plan.span0.tolist() == [2, 3] and plan.span1.tolist() == [2]
    x0 = torch.arange(6 * 2, dtype=torch.float32).reshape(1, 6, 2)
    x1 = torch.zeros(1, 7, 2)
    D = pair_differences(Captured(x0, torch.ones(1, 6)), Captured(x1, torch.ones(1, 7)), plan)
    assert D.dtype == torch.float32 and D.shape == (3, 2)
    assert torch.equal(D[-1], (x0[0, 2] + x0[0, 3]) / 2)  # span mean difference


def test_insertion_span_has_no_counterpart():
    plan = plan_alignment([[1, 2, 9, 3]], [[1, 2, 3]], seq0=4, seq1=3, mode="aligned")
    assert plan.n_spans == 0 and plan.tok0.tolist() == [3] and plan.tok1.tolist() == [2]


def test_layer_strategies():
    assert default_subset_size(30) == 4 and default_subset_size(32) == 4 and default_subset_size(12) == 2
    assert select_layers("lower", 30) == [0, 1, 2, 3]
    assert select_layers("upper", 30) == [26, 27, 28, 29]
    assert select_layers("lower+upper", 30) == [0, 1, 28, 29]
    assert select_layers("lower", 30, subset_size=0.2) == list(range(6))
    assert select_layers([0, -1], 30) == [0, 29]
    with pytest.raises(ConfigError, match="out of range"):
        select_layers([30], 30)
    with pytest.raises(ConfigError, match="unknown layer strategy"):
        select_layers("middle", 30)


def test_targets_alpha_per_role_and_layer():
    t = TargetParams(roles=("attn_out", "mlp_out"), alpha={"attn_out": 0.1, "mlp_out": 0.5}, layer_alpha={3: 0.0})
    assert t.alpha_for(0, "attn_out") == 0.1 and t.alpha_for(0, "mlp_out") == 0.5 and t.alpha_for(3, "mlp_out") == 0
    # the library path checks with the same model as the pipeline schema, and says which setting is wrong
    with pytest.raises(ConfigError, match=r"alpha: must be >= 0 \(got -1\)"):
        FairPairObjective(PAIRS, alpha=-1)
    with pytest.raises(ConfigError, match="roles.0: Input should be 'attn_qkv'"):
        FairPairObjective(PAIRS, roles=("attn_o",))
    with pytest.raises(ConfigError, match="alpha given for role"):
        FairPairObjective(PAIRS, alpha={"attn_qkv": 0.1})


def _capture(model, tok, pairs):
    """Inputs of layer 0's o_proj for both streams (via the objective's own tokenisation)."""
    obj = FairPairObjective(pairs, alpha=1.0, batch_size=5)
    streams = obj.streams(tok)
    caught = {}
    layer = model.model.layers[0]
    for name, batches in streams.items():
        caught[name] = []
        for b in batches:
            xs = []
            h = layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: xs.append(a[0]))
            model(input_ids=b.input_ids, attention_mask=b.attention_mask)
            h.remove()
            caught[name].append(Captured(xs[0], b.attention_mask.bool()))
    return obj, caught


def test_hbias_is_per_pair_normalised_and_pad_free():
    model, tok = tiny_llama(), CharTokenizer()
    with torch.no_grad():
        obj, caught = _capture(model, tok, PAIRS)
        H_bias = obj.term(0, "attn_out", caught)
        # Reference: each pair alone, unpadded, same alignment; (2α/P) Σ D Dᵀ.
        ref = torch.zeros_like(H_bias)
        for p in PAIRS:
            single, c1 = _capture(model, tok, [p])
            D = pair_differences(c1[single._names[0]][0], c1[single._names[1]][0], single._streams.plans[0])
            ref += D.T @ D
        ref *= 2.0 / len(PAIRS)
    assert torch.allclose(H_bias, ref, rtol=1e-4, atol=1e-5)
    assert torch.linalg.eigvalsh(H_bias.double()).min() > -1e-6 * H_bias.abs().max()


def test_alpha_zero_is_bit_identical_to_plain_gptq():
    tok = CharTokenizer()
    cfg = QuantConfig(bits=4, group_size=32)
    plain, fair = tiny_llama(), tiny_llama()
    # Plain GPTQ calibrated on the same pair sentences (both streams as Hessian streams, α = 0).
    r0 = quantize_model(plain, None, cfg, objectives=[FairPairObjective(PAIRS, alpha=0.0)], tokenizer=tok,
                        progress=False)
    r1 = quantize_model(fair, None, cfg, objectives=[FairPairObjective(PAIRS, alpha=0.0, mode="exact")],
                        tokenizer=tok, progress=False)
    for name in r0.qweights:
        assert torch.equal(r0.qweights[name].codes, r1.qweights[name].codes)
    for (n, p0), p1 in zip(plain.named_parameters(), fair.parameters()):
        assert torch.equal(p0, p1), n


def test_fair_term_changes_only_targeted_modules_and_reports_delta():
    tok = CharTokenizer()
    cfg = QuantConfig(bits=8, group_size=32)
    plain, fair = tiny_llama(), tiny_llama()
    quantize_model(plain, None, cfg, objectives=[FairPairObjective(PAIRS, alpha=0.0)], tokenizer=tok, progress=False)
    res = quantize_model(fair, None, cfg, objectives=[FairPairObjective(PAIRS, alpha=0.5, layers="lower", subset_size=1)],
                         tokenizer=tok, progress=False)
    touched = {r.name for r in res.reports if r.delta_w_rel is not None}
    assert touched == {"model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj"}
    for r in res.reports:
        if r.name in touched:
            assert r.delta_w_rel > 0 and r.fair_radius is not None and r.fair_mode == "first_order"
    # q/k/v of layer 0 come before the first targeted module (true-sequential): same H, no H_bias,
    # identical to plain GPTQ.  Later modules differ only through their (changed) inputs.
    P = dict(plain.named_parameters())
    for n, p in fair.named_parameters():
        if n.startswith("model.layers.0.self_attn.") and n.split(".")[-2] in ("q_proj", "k_proj", "v_proj"):
            assert torch.equal(p, P[n]), n
    assert not torch.equal(P["model.layers.0.mlp.down_proj.weight"], dict(fair.named_parameters())["model.layers.0.mlp.down_proj.weight"])


def test_overshoot_is_detected_and_exact_fallback_applied():
    tok = CharTokenizer()
    res = quantize_model(tiny_llama(2), None, QuantConfig(), tokenizer=tok, progress=False,
                         objectives=[FairPairObjective(PAIRS, alpha=1e4, on_overshoot="exact")])
    fair = [r for r in res.reports if r.fair_radius is not None]
    assert fair and all(r.fair_overshoot and r.fair_mode == "exact" for r in fair)
    assert all(any("overshoot" in e for e in r.stability["events"]) for r in fair)
    with pytest.raises(ConfigError, match="overshoot"):
        quantize_model(tiny_llama(2), None, QuantConfig(), tokenizer=tok, progress=False,
                       objectives=[FairPairObjective(PAIRS, alpha=1e4, on_overshoot="error")])


def test_extra_hbias_sources_add_up():
    tok = CharTokenizer()
    eye = lambda layer, role, d: torch.eye(d)  # noqa: E731
    res = quantize_model(tiny_llama(2), None, QuantConfig(), tokenizer=tok, progress=False,
                         objectives=[FairPairObjective(PAIRS, alpha=0.1),
                                     MatrixObjective(eye, alpha=2.0, roles=("attn_out",))])
    only_pairs = quantize_model(tiny_llama(2), None, QuantConfig(), tokenizer=tok, progress=False,
                                objectives=[FairPairObjective(PAIRS, alpha=0.1)])
    a = {r.name: r.hbias_trace_ratio for r in res.reports if r.role == "attn_out"}
    b = {r.name: r.hbias_trace_ratio for r in only_pairs.reports if r.role == "attn_out"}
    assert all(a[n] > b[n] for n in a)
    with pytest.raises(ConfigError, match="symmetric"):
        quantize_model(tiny_llama(2), None, QuantConfig(), tokenizer=tok, progress=False,
                       objectives=[FairPairObjective(PAIRS, alpha=0.1),
                                   MatrixObjective(lambda l, r, d: torch.ones(d, d + 1), roles=("attn_out",))])


def test_extra_hbias_source_honours_negative_layer_alpha():
    """layer_alpha {-1: 0} switches the last layer's term off: term() gets the α applies() resolved."""
    eye = lambda layer, role, d: torch.eye(d)  # noqa: E731
    res = quantize_model(tiny_llama(2), None, QuantConfig(), tokenizer=CharTokenizer(), progress=False,
                         objectives=[FairPairObjective(PAIRS, alpha=0.0),
                                     MatrixObjective(eye, alpha=2.0, roles=("attn_out",), layer_alpha={-1: 0.0})])
    touched = {r.name for r in res.reports if r.delta_w_rel is not None}
    assert touched == {"model.layers.0.self_attn.o_proj"}


def test_pairs_hash_is_content_sensitive():
    assert pairs_hash(PAIRS) == pairs_hash(list(PAIRS))
    assert pairs_hash(PAIRS) != pairs_hash(PAIRS[::-1])
    assert len(pairs_hash(PAIRS)) == 16 and int(pairs_hash(PAIRS), 16) >= 0 and not math.isnan(0.0)


def test_term_without_streams_is_an_error_not_plain_gptq():
    """A driver that never called streams() propagated no pair streams: the term must not quietly vanish."""
    obj = FairPairObjective(PAIRS, alpha=0.1)
    assert obj.applies(0, "attn_out", 2)
    with pytest.raises(ConfigError, match=r"streams\(tokenizer\)"):
        obj.term(0, "attn_out", {})


class _Builds(ObjectiveParams):
    builds: bool = True
    gradients: bool = False

    def builds_hessian(self) -> bool:
        return self.builds

    def needs_gradients(self) -> bool:
        return self.gradients


class _TextObjective(Objective):
    """Streams one batch; whether it builds H and asks for gradients is only its settings' answer."""

    name = "texts"

    def __init__(self, **settings) -> None:
        self.params = _Builds(**settings)

    def streams(self, tokenizer) -> dict:
        ids = torch.ones(1, 3, dtype=torch.long)
        return {"texts": [TokenBatch(ids, torch.ones_like(ids))]}

    def score_request(self, tokenizer):
        return object()  # asks for a gradient whatever its settings say

    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        return False


def test_the_driver_builds_h_from_the_answer_the_pipeline_checks():
    from fairgptq.core.driver import prepare_streams
    streams, hessian = prepare_streams(None, [_TextObjective(builds=True)], None)
    assert set(streams) == {"texts"} and hessian == {"texts"}
    with pytest.raises(ConfigError, match="no calibration data for H"):
        prepare_streams(None, [_TextObjective(builds=False)], None)


def test_a_gradient_request_its_settings_deny_is_refused():
    from fairgptq.core.score_gradient import GradientPasses
    with pytest.raises(ConfigError, match="needs_gradients"):
        GradientPasses(None, None, 1, [_TextObjective(gradients=False)], None, [], torch.device("cpu"))
    assert _TextObjective(gradients=True).needs_gradients() and not _TextObjective().needs_gradients()
