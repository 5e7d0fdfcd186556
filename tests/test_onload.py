"""Sequential onloading (fairgptq.onload) against the in-memory path: the same checkpoint, tensor by tensor."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fairgptq.core.driver import quantize_model
from fairgptq.core.errors import ConfigError
from fairgptq.core.quantizer import QuantConfig
from fairgptq.contract.pairs import Pair
from fairgptq.export import export_checkpoint, load_gptq_checkpoint, snap_to_checkpoint_precision
from fairgptq.objectives.fair_pairs import FairPairObjective
from fairgptq.onload import choose_onload, load_offloaded, parse_size, quantize_onloaded
from fairgptq.onload.source import SafetensorsSource
from tiny_model import PAIRS, save_tiny_llama, token_batches


def checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, single file or sharded."""
    source = SafetensorsSource(folder)
    return {name: source.read(name) for name in source.names()}


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert sorted(ta) == sorted(tb)
    differing = [k for k in ta if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:5]}"
    qa, qb = (json.loads((f / "quantize_config.json").read_text()) for f in (a, b))
    # the content hashes are of each checkpoint's own files (one file, or the onloader's shards)
    ia, ib = qa["meta"]["fairgptq"].pop("integrity"), qb["meta"]["fairgptq"].pop("integrity")
    assert set(ia["sha256"]) and set(ib["sha256"])
    assert qa == qb


def in_memory(folder: Path, out: Path, calib, cfg: QuantConfig, objectives, tok) -> Path:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    result = quantize_model(model, calib, cfg, objectives=objectives, tokenizer=tok, progress=False)
    snap_to_checkpoint_precision(model, result)
    export_checkpoint(model, tok, result, out)
    return out


@pytest.fixture
def tiny(tmp_path):
    from transformers import AutoTokenizer

    folder = save_tiny_llama(tmp_path / "tiny", layers=3)
    tok = AutoTokenizer.from_pretrained(folder)
    calib = token_batches(tok, [s for p in PAIRS for s in p][:12], batch_size=4)
    return folder, tok, calib


def pairs() -> list[Pair]:
    return [Pair(s, a, "gender", source_id=f"t:{i}") for i, (s, a) in enumerate(PAIRS)]


def fair(alpha: float = 0.1) -> FairPairObjective:
    return FairPairObjective(pairs(), alpha=alpha, roles=("attn_out", "mlp_out"), layers="all", mode="exact")


@pytest.mark.parametrize("max_memory, sym", [(None, True), ("1KiB", True), ("1KiB", False)],
                         ids=["in-memory-activations", "all-spilled", "asymmetric-spilled"])
def test_onloaded_checkpoint_equals_in_memory_tiny(tiny, tmp_path, one_thread, max_memory, sym):
    folder, tok, calib = tiny
    cfg = QuantConfig(bits=4, group_size=32, sym=sym)
    a = in_memory(folder, tmp_path / "a", calib, cfg, [fair()], tok)
    run = quantize_onloaded(folder, tmp_path / "b", calib, cfg, objectives=[fair()], tokenizer=tok,
                            max_memory=max_memory, progress=False)
    assert_same_checkpoint(a, tmp_path / "b")
    if max_memory is None:
        assert run.activations_spilled_bytes == 0
    else:  # a 1 KiB budget cannot hold one batch: every layer's inputs came back from memory-mapped files
        assert run.activations_held_bytes == 0 and run.activations_spilled_bytes > 0
    # one shard per decoder layer, written as the layer finished
    assert len(list((tmp_path / "b").glob("model-layer-*.safetensors"))) == 3


def test_offloaded_evaluation_model_equals_loaded_checkpoint(tiny, tmp_path, one_thread):
    folder, tok, calib = tiny
    cfg = QuantConfig(bits=4, group_size=32)
    quantize_onloaded(folder, tmp_path / "q", calib, cfg, objectives=[fair()], tokenizer=tok, progress=False)
    ref, _, _ = load_gptq_checkpoint(tmp_path / "q")
    off, _, _ = load_offloaded(tmp_path / "q", tmp_path / "offload")
    assert any(p.device.type == "meta" for p in off.model.layers.parameters())  # really on disk
    ids = tok("he is a good doctor and she is a kind nurse", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, off(ids).logits)


def test_choose_onload_says_which_and_why(tiny):
    folder, _, _ = tiny
    small = choose_onload(str(folder), "auto", "1KiB", torch.float32)
    assert small.onload and "exceed max_memory" in small.reason
    big = choose_onload(str(folder), "auto", "1GiB", torch.float32)
    assert not big.onload and "fit" in big.reason
    with pytest.raises(ConfigError, match="in-memory path refuses.*onload: auto"):
        choose_onload(str(folder), "never", "1KiB", torch.float32)
    assert choose_onload(str(folder), "always", None, torch.float32).onload


def test_onload_needs_safetensors(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    with pytest.raises(ConfigError, match="safetensors"):
        choose_onload(str(gguf), "always", None, torch.float32)
    assert not choose_onload(str(gguf), "auto", "1KiB", torch.float32).onload


def test_parse_size():
    assert parse_size("8GiB") == 8 * 2**30 and parse_size("512 MB") == 512 * 10**6 and parse_size(1024) == 1024
    with pytest.raises(ConfigError, match="unit"):
        parse_size("8 gigs")


@pytest.mark.real_model
@pytest.mark.slow
def test_onloaded_smollm2_equals_in_memory(smollm2_base, real_data_dir, tmp_path, one_thread):
    """SmolLM2 saved as a safetensors folder (it ships as GGUF), quantized both ways on one thread."""
    from fairgptq.datasets_adapters.wikitext import calibration_windows

    model, tok = smollm2_base
    folder = tmp_path / "smollm2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    calib = calibration_windows(tok, n=4, seqlen=128, seed=0)
    cfg = QuantConfig(bits=4, group_size=128, sym=True)
    objectives = [FairPairObjective(pairs(), alpha=0.1, roles=("attn_out", "mlp_out"), layers="upper", mode="exact")]
    a = in_memory(folder, tmp_path / "a", calib, cfg, objectives, tok)
    quantize_onloaded(folder, tmp_path / "b", calib, cfg, objectives=objectives, tokenizer=tok,
                      max_memory="256MiB", progress=False)
    assert_same_checkpoint(a, tmp_path / "b")


def test_pipeline_onload_always_matches_never(tmp_path, one_thread):
    """A whole pipeline run both ways: same checkpoint, same metrics (offloaded evaluation), the choice recorded."""
    from fairgptq.pipeline import load_pipeline
    from fairgptq.pipeline.runner import run_pipeline
    from tiny_model import WORDS, tiny_pipeline, write_pair_file, write_yaml

    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) for i in range(20)))
    model = save_tiny_llama(tmp_path / "model", layers=3)
    outs = {}
    for mode in ("never", "always"):
        raw = tiny_pipeline(model, write_pair_file(tmp_path / "pairs.jsonl"),
                            evaluation={"tasks": ["wikitext2"], "paths": {"wikitext2": str(text)}, "seqlen": 32})
        raw["model"].update(onload=mode, max_memory="1GiB")
        raw["backend"] = {"name": "cpu", "params": {"threads": 1}}
        outs[mode] = run_pipeline(load_pipeline(write_yaml(tmp_path / f"{mode}.yaml", raw)), tmp_path / mode)
    assert_same_checkpoint(outs["never"] / "model", outs["always"] / "model")
    r_never, r_always = (json.loads((outs[m] / "results.json").read_text()) for m in ("never", "always"))
    assert r_never["metrics"] == r_always["metrics"] and r_always["metrics"]
    assert r_always["model"]["onload"]["onload"] and "disk offload" in r_always["model"]["onload"]["evaluated_with"]
    assert not r_never["model"]["onload"]["onload"]
    assert "sequential onloading" in (outs["always"] / "report.md").read_text()
    assert not list(outs["always"].glob(".offload*")) and not list(outs["always"].glob("fairgptq-activations-*"))
