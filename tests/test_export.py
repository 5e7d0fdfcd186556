"""GPTQ checkpoint export: bit layout, exact pack -> unpack round trip, reload with identical logits."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fairgptq import QuantConfig, quantize_model, quantize_weight
from fairgptq.core.errors import ConfigError
from fairgptq.export import (ExportError, at_checkpoint_precision, choose_format, export_checkpoint,
                             fairgptq_record, load_gptq_checkpoint, pack_weight, snap_to_checkpoint_precision,
                             unpack_weight)
from fairgptq.export.packing import pack_last, unpack_last
from fairgptq.contract import pairs_hash
from fairgptq.objectives.fair_pairs import FairPairObjective
from fairgptq.contract.pairs import Pair

from tiny_model import PAIRS, tiny_llama, token_batches


def autogptq_pack_qweight(intweight: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ's QuantLinear.pack loop (the format's definition), on (in, out) codes."""
    intweight = intweight.astype(np.uint32)
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < qweight.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                qweight[row] |= intweight[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= intweight[i] << 30
            row += 1
            qweight[row] |= (intweight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= intweight[i] << 31
            row += 1
            qweight[row] |= (intweight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return qweight.astype(np.int32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_matches_autogptq_layout_and_round_trips(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (64, 96), generator=g)  # (in, out), as AutoGPTQ packs
    packed = pack_last(codes.T, bits).T
    assert packed.dtype == torch.int32 and packed.shape == (64 * bits // 32, 96)
    np.testing.assert_array_equal(packed.numpy(), autogptq_pack_qweight(codes.numpy(), bits))
    assert torch.equal(unpack_last(packed.T, bits).T, codes)


def test_packing_refuses_bad_widths_and_codes():
    with pytest.raises(ConfigError):
        pack_last(torch.zeros(4, 12, dtype=torch.int64), 4)
    with pytest.raises(ConfigError, match="outside"):
        pack_last(torch.full((4, 8), 16), 4)


def _engine_weight(sym: bool, act_order: bool, bits: int = 4, group: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(64, 128, generator=g)
    X = torch.randn(512, 128, generator=g) * torch.linspace(0.2, 2.0, 128)
    H = 2 * X.T @ X / 512
    cfg = QuantConfig(bits=bits, group_size=group, sym=sym, act_order=act_order)
    return quantize_weight(W, H, cfg)


@pytest.mark.parametrize("sym,act_order,bits", [(True, False, 4), (False, True, 4), (True, True, 3), (False, False, 8),
                                                (True, False, 2)])
def test_pack_unpack_equals_engine_dequantized_weights_exactly(sym, act_order, bits):
    qw = at_checkpoint_precision(_engine_weight(sym, act_order, bits))
    fmt = choose_format({"w": qw})
    back = unpack_weight(pack_weight(qw, fmt), bits=bits, group_size=32, sym=sym, checkpoint_format=fmt)
    assert torch.equal(back.codes, qw.codes) and torch.equal(back.zeros, qw.zeros)
    assert torch.equal(back.g_idx, qw.g_idx) and torch.equal(back.scales, qw.scales)
    assert torch.equal(back.dequantize(), qw.dequantize())


def test_fp16_snap_is_the_only_change_and_is_tiny():
    qw = _engine_weight(True, False)
    snapped = at_checkpoint_precision(qw)
    assert torch.equal(snapped.codes, qw.codes)
    rel = (snapped.scales - qw.scales).abs() / qw.scales
    assert float(rel.max()) <= 2**-11
    assert torch.equal(snapped.scales, snapped.scales.half().float())


def test_v1_stores_zero_minus_one_and_refuses_zero_points_of_zero():
    qw = at_checkpoint_precision(_engine_weight(True, False))
    zeros_v1 = unpack_last(pack_weight(qw, "gptq")["qzeros"], 4)
    assert torch.all(zeros_v1 == 7)  # symmetric 4-bit zero point 8, stored as 8 - 1
    assert torch.all(unpack_last(pack_weight(qw, "gptq_v2")["qzeros"], 4) == 8)
    qw.zeros[0, 0] = 0
    assert choose_format({"m": qw}) == "gptq_v2"
    with pytest.raises(ExportError, match="zero point of 0"):
        choose_format({"m": qw}, "gptq")


@pytest.fixture(scope="module")
def quantized_tiny():
    model, tok = tiny_llama()
    pairs = [Pair(s, a, "gender", source_id=f"t:{i}") for i, (s, a) in enumerate(PAIRS)]
    obj = FairPairObjective(pairs, alpha=0.1, pair_set="tiny")
    calib = token_batches(tok, [s for p in PAIRS for s in p])
    result = quantize_model(model, calib, QuantConfig(bits=4, group_size=32), objectives=[obj], tokenizer=tok,
                            progress=False)
    snap_to_checkpoint_precision(model, result)
    return model, tok, result


def test_export_refuses_a_model_that_was_not_snapped(tmp_path):
    model, tok = tiny_llama()
    calib = token_batches(tok, [s for p in PAIRS for s in p])
    result = quantize_model(model, calib, QuantConfig(bits=4, group_size=32), progress=False)
    if all(torch.equal(q.scales, q.scales.half().float()) for q in result.qweights.values()):
        pytest.skip("the engine already rounds scales to float16: nothing to snap")
    with pytest.raises(ExportError, match="snap_to_checkpoint_precision"):
        export_checkpoint(model, tok, result, tmp_path / "ckpt")


def test_checkpoint_layout_config_and_fairness_record(quantized_tiny, tmp_path):
    model, tok, result = quantized_tiny
    export_checkpoint(model, tok, result, tmp_path, fairgptq_meta={"pair_sets": {"tiny": {"n": len(PAIRS)}}})
    t = load_file(str(tmp_path / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj"
    assert t[f"{name}.qweight"].dtype == torch.int32 and t[f"{name}.qweight"].shape == (64 * 4 // 32, 64)
    assert t[f"{name}.qzeros"].shape == (2, 64 * 4 // 32) and t[f"{name}.scales"].dtype == torch.float16
    assert t[f"{name}.g_idx"].dtype == torch.int32 and f"{name}.weight" not in t
    assert "model.embed_tokens.weight" in t and "lm_head.weight" not in t  # tied: stored once
    qc = json.loads((tmp_path / "quantize_config.json").read_text())
    assert (qc["bits"], qc["group_size"], qc["sym"], qc["desc_act"], qc["quant_method"], qc["checkpoint_format"]) == \
        (4, 32, True, True, "gptq", "gptq")   # QuantConfig's default: static act-order
    assert qc["static_groups"] is True and torch.equal(t[f"{name}.g_idx"].long(), torch.arange(64) // 32)
    fair = fairgptq_record(qc)
    pairs = [Pair(s, a, "gender", source_id=f"t:{i}") for i, (s, a) in enumerate(PAIRS)]
    assert fair["objectives"][0]["pair_set"] == "tiny"
    assert fair["objectives"][0]["pairs_sha256_16"] == pairs_hash(pairs)
    assert fair["objectives"][0]["alpha"] == 0.1 and fair["pair_sets"]["tiny"]["n"] == len(PAIRS)
    assert len(fair["modules"]) == 2 * 7 and "stability" in fair["modules"][0]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "gptq" and "fairgptq" not in cfg["quantization_config"]["meta"]


def test_reloaded_checkpoint_gives_identical_logits(quantized_tiny, tmp_path):
    model, tok, result = quantized_tiny
    export_checkpoint(model, tok, result, tmp_path)
    loaded, tok2, qc = load_gptq_checkpoint(tmp_path)
    ids = tok(["the woman is a good engineer and the man is a kind nurse"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    for name, qw in result.qweights.items():
        assert torch.equal(loaded.get_submodule(name).weight.data, qw.dequantize())
    assert tok2("he is a good doctor").input_ids == tok("he is a good doctor").input_ids


def test_outlier_channels_are_saved_and_reload_exactly(tmp_path):
    """Backend ``outlier``: the fp16 kept columns travel as two extra tensors and come back bit-exact."""
    from fairgptq.backends import outlier_backend

    model, tok = tiny_llama()
    calib = token_batches(tok, [s for p in PAIRS for s in p])
    result = quantize_model(model, calib, QuantConfig(bits=4, group_size=32), backend=outlier_backend(kept_channels=0.05),
                            progress=False)
    snap_to_checkpoint_precision(model, result)
    qc = export_checkpoint(model, tok, result, tmp_path)
    t = load_file(str(tmp_path / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj"
    kept = result.qweights[name].outlier_idx
    assert kept.numel() == 6  # 5 % of 128 input channels, rounded
    assert torch.equal(t[f"{name}.outlier_idx"], kept) and t[f"{name}.outlier_weight"].dtype == torch.float16
    assert t[f"{name}.outlier_weight"].shape == (64, 6)
    assert fairgptq_record(qc)["outlier_channels"]["modules"][name] == 6
    loaded, _, _ = load_gptq_checkpoint(tmp_path)
    ids = tok(["the woman is a good engineer and the man is a kind nurse"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    for n, qw in result.qweights.items():
        assert torch.equal(loaded.get_submodule(n).weight.data, qw.dequantize())


@pytest.mark.parametrize("act_order", [False, True])
def test_regroup_splits_groups_with_repeated_grids_and_bit_identical_weights(act_order):
    from fairgptq.export.regroup import regroup

    g = torch.Generator().manual_seed(3)
    W = torch.randn(16, 96, generator=g)                    # 96 columns, groups of 64: the last one is partial
    X = torch.randn(256, 96, generator=g) * torch.linspace(0.2, 2.0, 96)
    qw = at_checkpoint_precision(quantize_weight(W, 2 * X.T @ X / 256, QuantConfig(bits=4, group_size=64,
                                                                                    act_order=act_order)))
    split = regroup(qw, 32)
    assert split.group_size == 32 and split.scales.shape == (3, 16)
    assert torch.equal(torch.bincount(split.g_idx.long()), torch.full((3,), 32))
    assert torch.equal(split.dequantize(), qw.dequantize())
    parent = qw.g_idx.long()
    assert torch.equal(split.scales[split.g_idx.long()], qw.scales[parent])  # each stored group in one true group
    if not act_order:
        assert torch.equal(split.g_idx, torch.arange(96, dtype=torch.int32) // 32)


def test_partial_groups_are_exported_losslessly_as_the_gcd_group(tmp_path):
    """Group 128 on 64/128-wide layers: stored as groups of 64, the true grouping recorded, weights identical."""
    model, tok = tiny_llama()
    calib = token_batches(tok, [s for p in PAIRS for s in p])
    result = quantize_model(model, calib, QuantConfig(bits=4, group_size=128), progress=False)
    snap_to_checkpoint_precision(model, result)
    qc = export_checkpoint(model, tok, result, tmp_path)
    assert qc["group_size"] == 64
    grouping = fairgptq_record(qc)["grouping"]
    assert grouping["quantized_group_size"] == 128 and grouping["stored_group_size"] == 64 and "partial" in \
        grouping["reason"]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["quantization_config"]["group_size"] == 64 and cfg["architectures"] == ["LlamaForCausalLM"]
    t = load_file(str(tmp_path / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj"
    assert t[f"{name}.scales"].shape == (1, 64)               # 64 input columns: one group of 64
    assert t["model.layers.0.mlp.down_proj.scales"].shape == (2, 64)  # 128 inputs: two groups of 64
    loaded, _, _ = load_gptq_checkpoint(tmp_path)
    for n, qw in result.qweights.items():
        assert torch.equal(loaded.get_submodule(n).weight.data, qw.dequantize())


def test_no_kernel_sized_lossless_group_is_refused_with_the_reason():
    from fairgptq.export.regroup import stored_group_size

    qw = _engine_weight(True, False)                         # 128 columns
    odd = replace(qw, codes=qw.codes[:, :72])                # 72 wide: gcd(64, 72, 128) = 8
    with pytest.raises(ExportError, match="finer than any GPTQ kernel accepts"):
        stored_group_size({"a": qw, "b": odd}, 64)
    assert stored_group_size({"a": qw}, 32) == 32 and stored_group_size({"a": qw}, -1) == -1


def test_unquantized_tensors_are_stored_in_the_dtype_config_json_names(quantized_tiny, tmp_path):
    model, tok, result = quantized_tiny
    export_checkpoint(model, tok, result, tmp_path, dtype=torch.float16)
    t = load_file(str(tmp_path / "model.safetensors"))
    assert t["model.embed_tokens.weight"].dtype == torch.float16 and t["model.norm.weight"].dtype == torch.float16
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float16"
