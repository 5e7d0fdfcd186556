"""End-to-end layer-by-layer quantization of tiny random models of all four architecture families.

Models are built from transformers configs (no downloads): Llama, OPT, GPT-2 (Conv1D, weights
stored transposed) and GPT-NeoX, hidden size 64 and 2 layers, plus a Llama whose widths (96, 160)
are not multiples of the group size (64), so the last group of every row is partial.
"""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig

from fairgptq.core.architectures import ARCHITECTURES, ROLES, arch_for
from fairgptq.core.driver import quantize_model
from fairgptq.core.errors import ConfigError, NonFiniteError, UnsupportedArchitectureError
from fairgptq.core.hessian import HessianAccumulator
from fairgptq.core.objective import TokenBatch
from fairgptq.core.quantizer import QuantConfig
from fairgptq.core.backend import Backend

VOCAB = 128


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(kind: str):
    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if kind == "llama":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=64, **common)
    if kind == "llama-partial":   # 96 = 64 + 32, 160 = 64 + 64 + 32 with group 64
        return LlamaConfig(hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=64, **common)
    if kind == "opt":
        return OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, word_embed_proj_dim=64, **common)
    if kind == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, **common)
    if kind == "gpt_neox":
        return GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             max_position_embeddings=64, **common)
    raise AssertionError(kind)


def tiny_model(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(kind))
    model.eval()
    return model


def batches(n_batches=2, batch=4, seq=16, seed=0, pad=0):
    """Calibration batches; ``pad`` extra right-pad positions (random tokens, mask 0) per row."""
    g = torch.Generator().manual_seed(seed)
    g_pad = torch.Generator().manual_seed(seed + 1000)   # pad tokens never shift the real tokens' draws
    out = []
    for _ in range(n_batches):
        ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
        mask = torch.ones_like(ids)
        if pad:
            ids = torch.cat([ids, torch.randint(3, VOCAB, (batch, pad), generator=g_pad)], dim=1)
            mask = torch.cat([mask, torch.zeros(batch, pad, dtype=mask.dtype)], dim=1)
        out.append(TokenBatch(ids, mask))
    return out


def _linear_weight(model, name, transposed):
    W = model.get_submodule(name).weight.data
    return W.T if transposed else W


def _expected_modules(model):
    spec = arch_for(model)
    n = len(model.get_submodule(spec.layers))
    return [(f"{spec.layers}.{li}.{m}", li, role) for li in range(n) for role, mods in spec.roles.items() for m in mods]


KINDS = ["llama", "llama-partial", "opt", "gpt2", "gpt_neox"]


@pytest.mark.parametrize("kind", KINDS)
def test_end_to_end_4bit(kind):
    model = tiny_model(kind)
    before = copy.deepcopy(model)
    spec = arch_for(model)
    group = 64 if kind == "llama-partial" else 32
    cfg = QuantConfig(bits=4, group_size=group)
    res = quantize_model(model, batches(), cfg, progress=False)

    expected = _expected_modules(model)
    # the report lists every module of every role, in true-sequential order, with its role and layer
    assert [(r.name, r.layer, r.role) for r in res.reports] == expected
    assert set(res.qweights) == {name for name, _, _ in expected}
    assert res.config == cfg and res.seconds > 0
    assert {r.role for r in res.reports} == set(ROLES)

    for name, _, _ in expected:
        W = _linear_weight(model, name, spec.transposed)
        W0 = _linear_weight(before, name, spec.transposed)
        qw = res.qweights[name]
        assert qw.codes.shape == W.shape
        raw = model.get_submodule(name).weight
        # codes are (out, in); GPT-2's Conv1D stores (in, out), every other family (out, in)
        assert tuple(raw.shape) == (tuple(W.shape)[::-1] if spec.transposed else tuple(W.shape))
        if spec.transposed and name.endswith("c_attn"):
            assert qw.codes.shape == (3 * 64, 64)
        # the module's weight is exactly its quantized weight (GPT-2 Conv1D: transposed back and forth)
        assert torch.equal(W, qw.dequantize(W.dtype)), name
        assert not torch.equal(W, W0), f"{name} was not changed"
        # values on a 4-bit grid: at most 16 distinct values per row and group
        cols = W.shape[1]
        n_groups = -(-cols // group)
        assert qw.scales.shape == (n_groups, W.shape[0])
        assert torch.equal(qw.g_idx.long(), torch.arange(cols) // group)
        for gi in range(n_groups):
            blk = W[:5, gi * group:(gi + 1) * group]
            assert all(row.unique().numel() <= 16 for row in blk)
        # and close to the float weight (the grid was fitted to it)
        assert float((W - W0).norm() / W0.norm()) < 0.3
        rep = next(r for r in res.reports if r.name == name)
        assert rep.shape == tuple(W.shape) and rep.stability["module"] == name
        assert rep.stability["attempts"] >= 1

    # nothing outside the decoder layers' role linears changed: embeddings, norms, biases, lm_head
    quantized = {f"{n}.weight" for n, _, _ in expected}
    after = dict(model.named_parameters())
    for pname, p0 in before.named_parameters():
        if pname not in quantized:
            assert torch.equal(after[pname], p0), f"{pname} changed"
    assert torch.equal(model.get_output_embeddings().weight, before.get_output_embeddings().weight)
    assert torch.equal(model.get_input_embeddings().weight, before.get_input_embeddings().weight)

    with torch.no_grad():
        ids = batches(1, seed=5)[0].input_ids
        logits = model(input_ids=ids).logits
    assert logits.shape == (4, 16, VOCAB) and torch.isfinite(logits).all()
    assert not model.training


def test_partial_last_group():
    """hidden 96 / intermediate 160 with group 64: groups of 64 + 32 (and 64 + 64 + 32)."""
    model = tiny_model("llama-partial")
    res = quantize_model(model, batches(), QuantConfig(bits=4, group_size=64), progress=False)
    q = res.qweights["model.layers.0.self_attn.q_proj"]
    down = res.qweights["model.layers.1.mlp.down_proj"]
    assert q.scales.shape[0] == 2 and int((q.g_idx == 1).sum()) == 32
    assert down.scales.shape[0] == 3 and int((down.g_idx == 2).sum()) == 32
    assert torch.all(down.scales > 0) and torch.isfinite(down.dequantize()).all()


@pytest.mark.parametrize("kind", ["llama", "opt", "gpt2"])
def test_pad_positions_do_not_change_the_result(kind):
    a, b = tiny_model(kind), tiny_model(kind)
    cfg = QuantConfig(bits=4, group_size=32)
    ra = quantize_model(a, batches(), cfg, progress=False)
    rb = quantize_model(b, batches(pad=6), cfg, progress=False)
    for name, qa in ra.qweights.items():
        qb = rb.qweights[name]
        # same real tokens: the same Hessians up to float summation order, so the same codes except
        # at most a rare rounding tie
        assert float((qa.codes != qb.codes).float().mean()) < 1e-3, name
        torch.testing.assert_close(qa.scales, qb.scales, rtol=1e-4, atol=1e-7)
    # and the padding is really there and masked (without the mask the result differs)
    c = tiny_model(kind)
    unmasked = [TokenBatch(t.input_ids, torch.ones_like(t.input_ids)) for t in batches(pad=6)]
    rc = quantize_model(c, unmasked, cfg, progress=False)
    diff = sum(float((ra.qweights[n].codes != rc.qweights[n].codes).float().mean()) for n in ra.qweights)
    assert diff > 0.01


def _recording_backend(store):
    class Recording(Backend):
        def solve(self, W, H, H_bias, config, fair, *, module, factored=None):
            store[module] = H.clone()
            return super().solve(W, H, H_bias, config, fair, module=module, factored=factored)
    return Recording()


def _hessians_by_forward(model, names, calib):
    """H = 2/N Σ X Xᵀ at each named module's input, from an ordinary forward of the whole model."""
    accs, handles = {}, []
    mask_box = {}
    for name in names:
        mod = model.get_submodule(name)
        acc = accs[name] = HessianAccumulator(mod.weight.shape[1] if not hasattr(mod, "nf") else mod.weight.shape[0])

        def hook(m, args, acc=acc):
            acc.add(args[0], mask_box["mask"])
        handles.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for b in calib:
                mask_box["mask"] = b.attention_mask
                model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    finally:
        for h in handles:
            h.remove()
    return {n: a.hessian() for n, a in accs.items()}


@pytest.mark.parametrize("kind", ["llama", "opt", "gpt2", "gpt_neox"])
def test_true_sequential_hessians(kind):
    """Every module's H comes from the activations of the model quantized up to that module.

    A module's input depends only on modules earlier in forward order, which are all quantized
    when it is solved; so the H the driver used must equal the H at that module in the finished,
    fully quantized model -- and differ from the float model's H past the first role.
    """
    model = tiny_model(kind)
    float_model = copy.deepcopy(model)
    calib = batches(pad=3)
    seen: dict[str, torch.Tensor] = {}
    quantize_model(model, calib, QuantConfig(bits=3, group_size=32), backend=_recording_backend(seen), progress=False)
    names = list(seen)
    h_quant = _hessians_by_forward(model, names, calib)
    h_float = _hessians_by_forward(float_model, names, calib)
    first = names[0]
    for name in names:
        scale = float(h_quant[name].abs().max())
        torch.testing.assert_close(seen[name], h_quant[name], rtol=1e-4, atol=1e-5 * scale)
    # the first role of layer 0 sees only embeddings; everything after sees quantized activations
    torch.testing.assert_close(seen[first], h_float[first], rtol=1e-4, atol=1e-5 * float(h_float[first].abs().max()))
    # GPT-NeoX's parallel residual feeds layer 0's MLP from the layer input, not from the attention:
    # its H must stay the float model's (no invented dependency)
    parallel = {"gpt_neox.layers.0.mlp.dense_h_to_4h"} if getattr(model.config, "use_parallel_residual", False) else set()
    for name in names[len(arch_for(model).roles["attn_qkv"]):]:
        rel = float((seen[name] - h_float[name]).norm() / h_float[name].norm())
        if name in parallel:
            assert rel < 1e-6, name
        else:
            assert rel > 1e-2, f"{name}: H equals the float model's; it was not built from quantized activations"


def test_roles_restriction_uses_float_inputs_for_unquantized_roles():
    """With roles=('attn_out',) only o_proj is quantized, and its H comes from the float q/k/v path."""
    model = tiny_model("llama")
    float_model = copy.deepcopy(model)
    calib = batches()
    seen: dict[str, torch.Tensor] = {}
    res = quantize_model(model, calib, QuantConfig(bits=4, group_size=32), roles=("attn_out",),
                         backend=_recording_backend(seen), progress=False)
    assert [r.role for r in res.reports] == ["attn_out", "attn_out"]
    assert set(seen) == {"model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"}
    h_float = _hessians_by_forward(float_model, ["model.layers.0.self_attn.o_proj"], calib)
    name = "model.layers.0.self_attn.o_proj"
    torch.testing.assert_close(seen[name], h_float[name], rtol=1e-4, atol=1e-5 * float(h_float[name].abs().max()))
    # q/k/v untouched
    for m in ("q_proj", "k_proj", "v_proj"):
        n = f"model.layers.0.self_attn.{m}.weight"
        assert torch.equal(dict(model.named_parameters())[n], dict(float_model.named_parameters())[n])
    # the full run's o_proj H differs: it saw quantized q/k/v outputs
    seen_full: dict[str, torch.Tensor] = {}
    quantize_model(copy.deepcopy(float_model), calib, QuantConfig(bits=4, group_size=32),
                   backend=_recording_backend(seen_full), progress=False)
    assert not torch.allclose(seen_full[name], seen[name], rtol=1e-4)


def test_unknown_role_is_refused():
    with pytest.raises(ConfigError, match="attn_o"):
        quantize_model(tiny_model("llama"), batches(1), QuantConfig(), roles=("attn_o",), progress=False)


def test_unsupported_architecture_lists_the_supported_ones():
    bert = AutoModelForCausalLM.from_config(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=64, is_decoder=True))
    with pytest.raises(UnsupportedArchitectureError) as ei:
        quantize_model(bert, batches(1), QuantConfig(), progress=False)
    msg = str(ei.value)
    assert "'bert'" in msg
    for name in ("llama", "mistral", "qwen2", "opt", "gpt2", "gpt_neox"):
        assert name in msg and name in ARCHITECTURES

    class Made(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "made_up_lm"})()
            self.lin = torch.nn.Linear(4, 4)

    with pytest.raises(UnsupportedArchitectureError, match="made_up_lm.*supports: cohere, falcon, gemma.*no list of decoder layers"):
        quantize_model(Made(), batches(1), QuantConfig(), progress=False)


def test_no_calibration_is_a_config_error():
    with pytest.raises(ConfigError, match="no calibration data"):
        quantize_model(tiny_model("llama"), [], QuantConfig(), progress=False)


def test_non_finite_activations_are_reported_by_module():
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight[3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"model\.layers\.1\.mlp\.gate_proj: the calibration activations"):
        quantize_model(model, batches(1), QuantConfig(group_size=32), progress=False)


@pytest.mark.parametrize("objective", [False, True])
def test_each_module_reports_its_gptq_loss(objective):
    """The recorded loss is tr((W − Ŵ) H (W − Ŵ)ᵀ) with H rebuilt here from a forward of the finished model
    (true-sequential: each module's input is what the driver saw) and W the float weight."""
    from fairgptq.objectives.fair_pairs import MatrixObjective
    model = tiny_model("llama")
    float_model = copy.deepcopy(model)
    calib = batches(pad=3)
    objectives = ([MatrixObjective(lambda l, r, d: torch.eye(d), alpha=0.5, roles=("attn_out",), mode="exact")]
                  if objective else [])
    res = quantize_model(model, calib, QuantConfig(bits=3, group_size=32), objectives=objectives, progress=False)
    names = [r.name for r in res.reports]
    hessians = _hessians_by_forward(model, names, calib)
    for rep in res.reports:
        E = (float_model.get_submodule(rep.name).weight.data - res.qweights[rep.name].dequantize()).double()
        expected = float(torch.trace(E @ hessians[rep.name].double() @ E.T))
        assert rep.gptq_loss == pytest.approx(expected, rel=1e-3), rep.name
        assert rep.gptq_loss > 0
        exact = objective and rep.role == "attn_out"
        assert (rep.stability["exact_update_attempts"] >= 1) == exact, rep.name  # counted, not only told
