"""Every family of the table on a tiny random model (transformers' own config classes, no download).

Each family is quantized with both built-in objectives (fair_pairs and likelihood_pairs: every
role they target must resolve), exported, reloaded through transformers by fairgptq's loader and
compared with the in-memory model; the module-name fallback must reproduce every table entry and
quantize a family left out of the table to the same codes; layouts it cannot map (BERT's
``intermediate`` / ``output``) are refused naming the modules; Gemma 2/3's sliding and full layers
get their own masks and rotary tables; onloading works on a non-Llama layout; mixture-of-experts
models quantize every routed expert from its own tokens (an expert no token reaches is rounded to
nearest), export them as per-expert GPTQ linears that fairgptq's loader writes back into the fused
tensors and GPTQModel loads, onload to the same checkpoint, and take both objectives on every routed expert;
docs/architectures.md's table is the registry's.
"""
from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

import pytest
import torch

from fairgptq import QuantConfig, export_checkpoint, quantize_model
from fairgptq.architecture_report import families_table
from fairgptq.cli import main
from fairgptq.core import driver as core_driver
from fairgptq.core.architecture_inference import infer_spec
from fairgptq.core.architectures import ARCHITECTURES, arch_for
from fairgptq.core.errors import UnsupportedArchitectureError
from fairgptq.core.objective import TokenBatch
from fairgptq.contract import Pair
from fairgptq.export import load_gptq_checkpoint
from fairgptq.objectives.fair_pairs import FairPairObjective
from fairgptq.objectives.likelihood_pairs import LikelihoodPairObjective

from tiny_families import dense_configs, moe_configs, tiny_model
from tiny_model import PAIRS, tiny_tokenizer, token_batches

pytestmark = pytest.mark.usefixtures("one_thread")

DENSE = dense_configs()
MOE = moe_configs()
ROOT = Path(__file__).resolve().parents[1]


def _pairs() -> list[Pair]:
    return [Pair(s, a, "gender", source_id=f"t:{i}") for i, (s, a) in enumerate(PAIRS)]


def _modules(model, spec) -> set[str]:
    n = len(model.get_submodule(spec.layers))
    return {f"{spec.layers}.{li}.{name}" for li in range(n) for _, name in spec.modules()}


def test_the_table_covers_the_issue_s_families():
    assert {"qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "falcon", "olmo2", "granite", "stablelm", "cohere",
            "gptj", "llama", "mistral", "qwen2", "opt", "gpt2", "gpt_neox", "mixtral", "qwen2_moe", "qwen3_moe",
            "olmoe"} <= set(ARCHITECTURES) == set(DENSE) | set(MOE)


@pytest.mark.parametrize("family", sorted(set(ARCHITECTURES) - {"qwen2_moe"}))
def test_the_fallback_infers_every_table_entry_from_module_names(family):
    """The inference is checked against 20 hand-written entries: what it does on a family it has never seen.

    (Qwen2-MoE's ``shared_expert_gate``, a one-output linear, has no role by name: its entry says so.)
    """
    model = tiny_model({**DENSE, **MOE}[family])
    spec, inferred = ARCHITECTURES[family], infer_spec(model)
    assert (inferred.layers, inferred.roles, inferred.transposed, inferred.fused, inferred.experts) == \
        (spec.layers, spec.roles, spec.transposed, spec.fused, spec.experts)
    for _, name in spec.modules():  # every named module exists in the installed transformers
        model.get_submodule(f"{spec.layers}.0.{name}")


@pytest.mark.parametrize("family", sorted(DENSE))
def test_family_quantizes_with_both_objectives_exports_and_reloads(family, tmp_path):
    model, tok = tiny_model(DENSE[family]), tiny_tokenizer()
    texts = [s for p in PAIRS for s in p]
    fair = FairPairObjective(_pairs(), alpha=0.1, roles=("attn_out",), mode="exact")
    likelihood = LikelihoodPairObjective(_pairs(), target=0.5, roles=("mlp_out",), max_length=16)
    result = quantize_model(model, token_batches(tok, texts), QuantConfig(bits=4, group_size=32),
                            objectives=[fair, likelihood], tokenizer=tok, progress=False)
    spec = arch_for(model)
    assert set(result.qweights) == _modules(model, spec)
    b0 = likelihood.describe()["calibration_preference"]
    for r in result.reports:  # fair_pairs' term reached attn_out; likelihood_pairs' step moved mlp_out towards parity
        assert (r.hbias_trace_ratio is not None and r.hbias_trace_ratio > 0) == (r.role == "attn_out"), r.name
        assert (r.score_change_pre_update is not None and r.score_change_pre_update * b0 < 0) == \
            (r.role == "mlp_out"), r.name
    export_checkpoint(model, tok, result, tmp_path)
    loaded, _, qc = load_gptq_checkpoint(tmp_path, dtype="float32")
    assert type(loaded) is type(model)
    for name, qw in result.qweights.items():
        assert torch.equal(spec.weight_of(loaded.get_submodule(name)), qw.dequantize()), name
    ids = tok(["the woman is a good engineer and the man is a kind nurse"], return_tensors="pt").input_ids
    with torch.no_grad():
        ours, theirs = model(ids).logits, loaded(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), float((ours - theirs).abs().max())


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_sliding_and_full_layers_are_called_with_their_own_arguments(family):
    """Layer 1 (full attention) must see its own mask and rotary table, not layer 0's (sliding window 4)."""
    model = tiny_model(DENSE[family])
    layers = model.model.layers
    ids = torch.randint(3, 30, (2, 16), generator=torch.Generator().manual_seed(0))
    seen = {}
    handles = [layers[i].register_forward_hook(lambda m, a, kw, out, i=i: seen.__setitem__(i, (a, kw, out)),
                                               with_kwargs=True) for i in range(2)]
    with torch.no_grad():
        model(ids)
        for h in handles:
            h.remove()
        state = core_driver.capture_first_layer_inputs(model, layers, [TokenBatch(ids, torch.ones_like(ids))],
                                                       torch.device("cpu"))
        args1, kw1, out1 = seen[1]
        hidden1 = args1[0] if args1 else kw1["hidden_states"]
        ours = core_driver._layer_output(layers[1](hidden1, *state.args[0], **state.kwargs_for(1)[0]))
        layer0s = core_driver._layer_output(layers[1](hidden1, *state.args[0], **state.kwargs[0]))
    assert state.layer_types == ["sliding_attention", "full_attention"]
    assert torch.allclose(ours, core_driver._layer_output(out1), atol=1e-6)
    assert not torch.allclose(layer0s, core_driver._layer_output(out1), atol=1e-3)  # the old bug, measurably wrong
    assert not any("forward" in vars(layer) for layer in layers)  # the pass-through forwards are removed


def test_a_family_left_out_of_the_table_is_quantized_by_the_fallback_to_the_same_codes(caplog, monkeypatch):
    monkeypatch.setattr("fairgptq.core.architecture_inference._logged", set())  # logged once per process
    model = tiny_model(DENSE["qwen3"])
    batches = token_batches(tiny_tokenizer(), [s for p in PAIRS for s in p])
    cfg = QuantConfig(bits=4, group_size=32)
    table = core_driver.quantize_model(copy.deepcopy(model), batches, cfg, progress=False)
    without = {k: v for k, v in ARCHITECTURES.items() if k != "qwen3"}
    with caplog.at_level(logging.WARNING, logger="fairgptq.core.architecture_inference"):
        inferred = core_driver.quantize_model(model, batches, cfg, progress=False, architectures=without)
    assert "'qwen3' has no spec; inferred from module names" in caplog.text and "mlp_out: mlp.down_proj" in caplog.text
    assert sorted(inferred.qweights) == sorted(table.qweights)
    for name, qw in table.qweights.items():
        assert torch.equal(qw.codes, inferred.qweights[name].codes), name


def test_a_layout_the_fallback_cannot_map_is_refused_naming_the_modules():
    from transformers import AutoModelForCausalLM, BertConfig

    bert = AutoModelForCausalLM.from_config(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=64, is_decoder=True))
    with pytest.raises(UnsupportedArchitectureError) as ei:
        arch_for(bert)
    msg = str(ei.value)
    assert "intermediate.dense (Linear)" in msg and "output.dense (Linear)" in msg
    assert "fairgptq_architectures" in msg and "docs/architectures.md" in msg and "\n" not in msg


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_inspect_prints_the_spec_of_a_model_folder(tmp_path, capsys):
    tiny_model(DENSE["phi3"]).save_pretrained(tmp_path / "phi3")
    rc, text = _cli(capsys, "inspect", tmp_path / "phi3")
    assert rc == 0, text
    assert "model_type 'phi3'); spec: built-in" in text and "decoder layers: model.layers (2)" in text
    assert re.search(r"attn_qkv\s+self_attn\.qkv_proj\s+128 x 64\s+fused: q \| k \| v", text)
    assert re.search(r"mlp_in\s+mlp\.gate_up_proj\s+256 x 64\s+fused: gate \| up", text)
    assert "quantized: 4 matrices per layer, 8 in all" in text
    assert "kept in float, outside the layers: model.embed_tokens.weight, model.norm.weight, lm_head.weight" in text
    rc, text = _cli(capsys, "inspect", tmp_path / "phi3", "--json")
    info = json.loads(text)
    assert info["roles"]["attn_out"] == [{"module": "self_attn.o_proj", "shape_out_in": [64, 64]}]
    assert "input_layernorm.weight" in info["float_per_layer"]


def test_inspect_says_when_the_mapping_was_inferred_shows_experts_and_refuses_bert(tmp_path, capsys):
    from transformers import BertConfig

    rc, text = _cli(capsys, "inspect", "phi")  # a transformers model type, built on the meta device
    assert rc == 0 and "spec: inferred from module names" in text and "self_attn.dense" in text
    tiny_model(MOE["olmoe"]).save_pretrained(tmp_path / "olmoe")
    rc, text = _cli(capsys, "inspect", tmp_path / "olmoe")
    assert rc == 0 and re.search(r"mlp_in\s+mlp\.experts\.gate_up_proj\[e\]\s+64 x 64.*each of 4 routed", text)
    assert "quantized: 12 matrices per layer, 24 in all" in text
    assert "mlp.gate.weight" in text.split("kept in float, per layer:")[1].splitlines()[0]
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               is_decoder=True).save_pretrained(tmp_path / "bert")
    rc, text = _cli(capsys, "inspect", tmp_path / "bert")
    assert rc == 2 and "intermediate.dense (Linear)" in text and "Traceback" not in text


def test_the_docs_table_is_what_the_registry_prints(capsys):
    rc, text = _cli(capsys, "inspect", "--families")
    assert rc == 0 and text == families_table()
    doc = (ROOT / "docs" / "architectures.md").read_text(encoding="utf-8")
    assert families_table() in doc, "regenerate the table: fairgptq inspect --families"


@pytest.mark.parametrize("family", ["gemma2", "phi3", "falcon"])
def test_onloading_a_non_llama_layout_equals_in_memory(family, tmp_path):
    from test_onload import assert_same_checkpoint, in_memory

    from fairgptq.onload.quantize import quantize_onloaded

    tok = tiny_tokenizer()
    tiny_model(DENSE[family]).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    calib = token_batches(tok, [s for p in PAIRS for s in p][:8])
    cfg = QuantConfig(bits=4, group_size=32)
    fair = lambda: FairPairObjective(_pairs(), alpha=0.1, roles=("attn_out", "mlp_out"), mode="exact")  # noqa: E731
    a = in_memory(tmp_path / "m", tmp_path / "a", calib, cfg, [fair()], tok)
    quantize_onloaded(tmp_path / "m", tmp_path / "b", calib, cfg, objectives=[fair()], tokenizer=tok, progress=False)
    assert_same_checkpoint(a, tmp_path / "b")


def test_the_docs_spec_plugin_example_registers_its_family():
    import types

    from fairgptq.registry import Registry

    doc = (ROOT / "docs" / "architectures.md").read_text(encoding="utf-8")
    code = re.search(r"## Writing a spec plugin.*?```python\n(.*?)```", doc, flags=re.S).group(1)
    module = types.ModuleType("doc_spec_plugin")
    exec(compile(code, "docs/architectures.md", "exec"), module.__dict__)
    registry = Registry(entry_points=False)
    registry.register(module, name="doc_spec_plugin")
    spec = registry.architectures()["my_lm"]
    assert spec.roles["mlp_in"] == ("ffn.w1", "ffn.w3") and registry.get("architectures", "my_lm").origin == \
        "module doc_spec_plugin"


def _moe_batches(tok):
    return token_batches(tok, [s for p in PAIRS for s in p])


def _expert_names(model, li: int, n: int = 4) -> list[str]:
    return [f"model.layers.{li}.mlp.experts.{kind}_per_expert.{e}" for e in range(n) for kind in ("gate_up_proj",
                                                                                                  "down_proj")]


def _slice(model, name: str) -> torch.Tensor:
    """The (out, in) slice of the fused tensor a routed expert's quantized name stands for."""
    path, e = name.rsplit(".", 1)
    owner, kind = path.rsplit(".", 1)
    return getattr(model.get_submodule(owner), kind.removesuffix("_per_expert"))[int(e)]


@pytest.mark.parametrize("family", sorted(MOE))
def test_moe_quantizes_every_expert_from_the_tokens_routed_to_it(family):
    model, tok = tiny_model(MOE[family]), tiny_tokenizer()
    router = model.model.layers[0].mlp.gate.weight.detach().clone()
    batches = _moe_batches(tok)
    fair = FairPairObjective(_pairs(), alpha=0.1, roles=("attn_out",), mode="exact")
    result = quantize_model(model, batches, QuantConfig(bits=4, group_size=32), objectives=[fair], tokenizer=tok,
                            progress=False)
    shared = {"qwen2_moe": ["mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj",
                            "mlp.shared_expert.down_proj"]}.get(family, [])
    attention = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    expected = {f"model.layers.{li}.{m}" for li in range(2) for m in attention + shared}
    expected |= {n for li in range(2) for n in _expert_names(model, li)}
    assert set(result.qweights) == expected
    for name, qw in result.qweights.items():
        if "_per_expert." in name:  # written back into its slice of the fused 3-D tensor
            assert torch.equal(_slice(model, name), qw.dequantize()), name
    assert torch.equal(model.model.layers[0].mlp.gate.weight, router)  # the router stays in float
    # fair_pairs' own stream (the same 16 pair sentences) builds H too (calibrate_with_pairs): twice the tokens
    tokens = 2 * int(sum(b.attention_mask.sum() for b in batches))
    for li in range(2):
        routed = {r.name: r.routed_tokens for r in result.reports if r.layer == li and r.routed_tokens is not None}
        assert sorted(routed) == sorted(_expert_names(model, li))
        gate_up = [routed[n] for n in routed if "gate_up" in n]
        assert sum(gate_up) == 2 * tokens  # top-2: every real token reaches two experts
        assert all(routed[n] == routed[n.replace("gate_up_proj", "down_proj")] for n in routed if "gate_up" in n)
    with torch.no_grad():
        assert torch.isfinite(model(batches[0].input_ids).logits).all()


def test_the_unfused_expert_forward_is_transformers_forward():
    from fairgptq.core.experts import unfused_experts

    model = tiny_model(MOE["mixtral"])
    layer, spec = model.model.layers[0], ARCHITECTURES["mixtral"]
    x = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = layer.mlp(x)
        with unfused_experts(layer, spec):
            ours = layer.mlp(x)
            view = layer.mlp.experts.gate_up_proj_per_expert[1].weight
            assert view.data_ptr() == layer.mlp.experts.gate_up_proj[1].data_ptr()  # a view, not a copy
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not hasattr(layer.mlp.experts, "gate_up_proj_per_expert") and "forward" not in vars(layer.mlp.experts)


def test_an_expert_no_token_reaches_is_rounded_to_nearest_and_says_so():
    from fairgptq.core.quantizer import round_to_nearest

    model, cfg = tiny_model(MOE["mixtral"]), QuantConfig(bits=4, group_size=32)

    def never_expert_3(module, args, out):
        logits, scores, index = out
        return logits, scores, torch.where(index == 3, (index + 1) % 3, index)

    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(never_expert_3)
    before = {li: model.model.layers[li].mlp.experts.gate_up_proj[3].detach().clone() for li in range(2)}
    result = quantize_model(model, _moe_batches(tiny_tokenizer()), cfg, progress=False)
    for li in range(2):
        name = f"model.layers.{li}.mlp.experts.gate_up_proj_per_expert.3"
        report = next(r for r in result.reports if r.name == name)
        assert report.routed_tokens == 0 and "H = identity" in report.stability["no_routed_tokens"]
        assert torch.equal(_slice(model, name), round_to_nearest(before[li], cfg))
        others = [r for r in result.reports if r.layer == li and r.routed_tokens and "gate_up" in r.name]
        assert len(others) == 3 and all("no_routed_tokens" not in r.stability for r in others)


@pytest.mark.parametrize("family", sorted(MOE))
def test_moe_exports_per_expert_modules_and_reloads_into_the_fused_tensors(family, tmp_path):
    """The checkpoint holds GPTQModel's per-expert layout (no fused tensor); the loader writes each back into its rows."""
    from safetensors import safe_open

    from fairgptq.export.gptq_format import snap_to_checkpoint_precision

    model, tok = tiny_model(MOE[family]), tiny_tokenizer()
    result = quantize_model(model, _moe_batches(tok), QuantConfig(bits=4, group_size=32), progress=False)
    snap_to_checkpoint_precision(model, result)
    export_checkpoint(model, tok, result, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        gate = f.get_tensor("model.layers.1.mlp.experts.3.gate_proj.scales")
    assert not any(k.endswith(("experts.gate_up_proj", "experts.down_proj")) for k in keys)
    for li in range(2):
        for e in range(4):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                assert {f"model.layers.{li}.mlp.experts.{e}.{proj}.{s}" for s in ("qweight", "qzeros", "scales",
                                                                                   "g_idx")} <= keys
    intermediate = model.model.layers[1].mlp.experts.gate_up_proj.shape[1] // 2
    assert gate.shape[1] == intermediate  # gate is the first half of gate_up's rows, up the second
    loaded, _, _ = load_gptq_checkpoint(tmp_path, dtype="float32")
    for name, qw in result.qweights.items():
        if "_per_expert." in name:
            assert torch.equal(_slice(loaded, name), qw.dequantize()), name
    assert torch.equal(loaded.model.layers[0].mlp.gate.weight, model.model.layers[0].mlp.gate.weight)
    ids = tok(["the woman is a good engineer and the man is a kind nurse"], return_tensors="pt").input_ids
    with torch.no_grad():
        ours, theirs = model(ids).logits, loaded(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), float((ours - theirs).abs().max())


def test_gptqmodel_loads_the_moe_export_with_every_expert_s_weights(tmp_path):
    """GPTQModel (its defuser splits the fused experts into per-expert linears) reads every expert we stored.

    Mixtral goes through defuser's replaced sparse block, OLMoE through its runtime defusion of the
    experts module: the two ways GPTQModel 7.7 builds per-expert modules.  Its torch kernel dequantizes
    to float16: our weights rounded to float16, exactly.
    """
    import subprocess
    import sys

    from fairgptq.core.experts import checkpoint_split
    from fairgptq.export.gptq_format import snap_to_checkpoint_precision

    pytest.importorskip("gptqmodel")
    families = ["mixtral", "olmoe"]
    for family in families:
        model, tok = tiny_model(MOE[family]), tiny_tokenizer()
        result = quantize_model(model, _moe_batches(tok), QuantConfig(bits=4, group_size=32), progress=False)
        snap_to_checkpoint_precision(model, result)
        export_checkpoint(model, tok, result, tmp_path / family)
        weights = {stored: part.dequantize().half() for name, qw in result.qweights.items()
                   for stored, part in checkpoint_split(name, qw)}
        ids = tok(["the woman is a good engineer and the man is a kind nurse"], return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits
        torch.save({"weights": weights, "ids": ids, "logits": logits}, tmp_path / family / "expected.pt")
    run = subprocess.run([sys.executable, str(Path(__file__).parent / "gptqmodel_moe_check.py"),
                          *(str(tmp_path / f) for f in families)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"kernels"')]
    assert len(reports) == len(families), run.stdout[-3000:]
    for family, report in zip(families, reports):
        assert report["checked"] == 8 + 2 * 4 * 3 and report["differ"] == [], (family, report)
        assert report["kernels"] == ["TorchLinear"], (family, report)
        assert report["max_logit_diff"] < 1e-2, (family, report)  # float16 activations through the same weights


def test_a_moe_checkpoint_missing_an_expert_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from fairgptq.export.errors import ExportError
    from fairgptq.export.integrity import CheckpointIntegrityError

    model, tok = tiny_model(MOE["qwen3_moe"]), tiny_tokenizer()
    result = quantize_model(model, _moe_batches(tok), QuantConfig(bits=4, group_size=32), progress=False)
    export_checkpoint(model, tok, result, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    for s in ("qweight", "qzeros", "scales", "g_idx"):
        del tensors[f"model.layers.0.mlp.experts.2.up_proj.{s}"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointIntegrityError, match="model.safetensors"):  # the recorded hash covers the experts
        load_gptq_checkpoint(tmp_path)
    with pytest.raises(ExportError, match=r"model.layers.0.mlp.experts.gate_up_proj has 224 of its 256 rows"):
        load_gptq_checkpoint(tmp_path, trust_unverified=True)


@pytest.mark.parametrize("family", ["mixtral", "olmoe", "qwen2_moe"])
def test_onloading_a_moe_model_equals_in_memory(family, tmp_path):
    """Onloading reads the experts as saved (per expert; Mixtral's block_sparse_moe.experts.<e>.w1/w3/w2) into
    the fused tensors and writes the same per-expert checkpoint as the in-memory run; the offloaded evaluation
    model stacks them back into the fused tensors."""
    from safetensors import safe_open
    from test_onload import assert_same_checkpoint, in_memory

    from fairgptq.onload import load_offloaded
    from fairgptq.onload.quantize import quantize_onloaded

    tok = tiny_tokenizer()
    tiny_model(MOE[family]).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert not any(k.endswith("experts.gate_up_proj") for k in f.keys())  # transformers saves per expert
    calib = token_batches(tok, [s for p in PAIRS for s in p][:8])
    cfg = QuantConfig(bits=4, group_size=32)
    # the pair term on the routed experts too: onloading's restarted forwards capture each expert's inputs alike
    fair = lambda: FairPairObjective(_pairs(), alpha=0.1, roles=("attn_out", "mlp_out"), mode="exact")  # noqa: E731
    a = in_memory(tmp_path / "m", tmp_path / "a", calib, cfg, [fair()], tok)
    quantize_onloaded(tmp_path / "m", tmp_path / "b", calib, cfg, objectives=[fair()], tokenizer=tok, progress=False)
    assert_same_checkpoint(a, tmp_path / "b")
    loaded, _, _ = load_gptq_checkpoint(tmp_path / "b", dtype="float32")
    offloaded, _, _ = load_offloaded(tmp_path / "b", tmp_path / "offload")  # evaluation larger than memory
    assert any(p.device.type == "meta" for p in offloaded.model.layers.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(calib[0].input_ids).logits, offloaded(calib[0].input_ids).logits)


def test_swapping_in_kernels_for_experts_is_refused_by_name():
    from fairgptq.backends import CpuBackend, swap_in_quantized

    model, tok = tiny_model(MOE["olmoe"]), tiny_tokenizer()
    result = quantize_model(model, _moe_batches(tok), QuantConfig(bits=4, group_size=32), progress=False)
    with pytest.raises(TypeError, match=r"experts.gate_up_proj_per_expert.0 \(and 15 more\) is a routed expert's"):
        swap_in_quantized(model, result.qweights, CpuBackend())


def test_a_dense_layer_among_moe_layers_is_refused():
    import transformers as tf

    config = tf.Qwen3MoeConfig(**{**MOE["qwen3_moe"].to_dict(), "mlp_only_layers": [1]})
    with pytest.raises(UnsupportedArchitectureError, match="decoder layer 1 has no fused experts at mlp.experts"):
        quantize_model(tiny_model(config), _moe_batches(tiny_tokenizer()), QuantConfig(), progress=False)
