"""``fairgptq audit``: a base model against a quantized version of it, for checkpoints other tools wrote.

The quantized versions are made in the test from the tiny model: a fairgptq export, a GPTQModel
export (GPTQModel's own quantizer, on the CPU) and a compressed-tensors checkpoint written by the
compressed-tensors package (llm-compressor's format).  Each is audited against its base on the same
CrowS-Pairs items; the checks are the plumbing (every row paired on the same items, a verdict in
words, the files written) and the refusal of a format this machine cannot load, never a figure.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from fairgptq.audit import QuantizedFormatError, audit, load_for_audit, verdict_words
from fairgptq.cli import main

from tiny_model import save_tiny_llama, tiny_llama
from script_loading import load_script

TEXTS = ["the man is a good doctor and she was very kind " * 4] * 8


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("audit") / "base")


@pytest.fixture(scope="module")
def fairgptq_export(base_dir, tmp_path_factory):
    from fairgptq import QuantConfig, export_checkpoint, load_model, quantize_model
    from tiny_model import token_batches
    model, tok = load_model(str(base_dir))
    result = quantize_model(model, token_batches(tok, TEXTS), QuantConfig(bits=4, group_size=32), progress=False)
    out = tmp_path_factory.mktemp("audit") / "fairgptq"
    export_checkpoint(model, tok, result, out)
    return out


def _writers():
    """The checkpoint writers of scripts/audit_smollm2.py (the README's audit example), so both make the same kind."""
    return load_script("scripts/audit_smollm2.py")


@pytest.fixture(scope="module")
def gptqmodel_export(base_dir, tmp_path_factory):
    pytest.importorskip("gptqmodel", reason="GPTQModel is not installed: bash scripts/setup.sh")
    return _writers().write_gptqmodel_export(base_dir, tmp_path_factory.mktemp("audit") / "gptqmodel", TEXTS,
                                             group_size=32)


@pytest.fixture(scope="module")
def compressed_tensors_export(base_dir, tmp_path_factory):
    pytest.importorskip("compressed_tensors", reason="compressed-tensors is not installed: bash scripts/setup.sh")
    out = _writers().write_compressed_tensors_rtn(base_dir, tmp_path_factory.mktemp("audit") / "compressed",
                                                  group_size=32)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "compressed-tensors"
    return out


def _crows(real_data_dir):
    return {"paths": {"crows_pairs": str(real_data_dir / "crows_pairs" / "crows_pairs_anonymized.csv")}}


@pytest.mark.parametrize("which", ["fairgptq_export", "gptqmodel_export", "compressed_tensors_export"])
def test_audit_pairs_a_foreign_checkpoint_with_its_base(which, base_dir, request, real_data_dir, tmp_path):
    quantized = request.getfixturevalue(which)
    report = audit(str(base_dir), str(quantized), ["crows_pairs"], out=tmp_path / "a", limit=24,
                   n_boot=200, **_crows(real_data_dir))
    rows = {r["metric"]: r for r in report["rows"]}
    assert rows["pct_stereotype"]["n"] == 24 and "McNemar" in rows["pct_stereotype"]["test"]
    assert all(r["audit"] in ("more biased", "less biased", "better", "worse", "not distinguishable from noise",
                              "moved, but no closer to parity beyond noise")
               for r in report["rows"])
    assert report["categories"] and {c["category"] for c in report["categories"]} <= {
        "race-color", "gender", "socioeconomic", "nationality", "religion", "age", "sexual-orientation",
        "physical-appearance", "disability"}
    ids = [json.loads(line)["id"] for line in (tmp_path / "a" / "base" / "items" / "crows_pairs.jsonl").open()]
    ids_q = [json.loads(line)["id"] for line in (tmp_path / "a" / "quantized" / "items" / "crows_pairs.jsonl").open()]
    assert ids == ids_q
    assert (tmp_path / "a" / "audit.md").read_text().startswith("# Audit:")
    assert report["quantized"]["format"] != "unquantized"
    assert report["base"]["dtype"] == report["quantized"]["dtype"] == "float32"  # CPU compute, whatever is stored


def test_a_format_that_cannot_run_here_is_refused_naming_what_would(base_dir, tmp_path):
    folder = tmp_path / "awq"
    model, tok = tiny_llama()
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantizedFormatError, match="'awq'.*AutoAWQ"):
        load_for_audit(str(folder))
    assert main(["audit", str(base_dir), str(folder), "--tasks", "wikitext2"]) == 2


def test_verdict_words_follow_the_direction_of_the_metric():
    sig = {"verdict": "significant"}
    assert verdict_words({**sig, "metric": "pct_stereotype", "a": 55.0, "b": 58.0, "diff": 3.0}) == "more biased"
    assert verdict_words({**sig, "metric": "pct_stereotype", "a": 55.0, "b": 52.0, "diff": -3.0}) == "less biased"
    assert verdict_words({**sig, "metric": "SS", "a": 45.0, "b": 42.0, "diff": -3.0}) == "more biased"
    assert verdict_words({**sig, "metric": "perplexity", "a": 20.0, "b": 22.0, "diff": 2.0}) == "worse"
    assert verdict_words({**sig, "metric": "acc", "a": 0.5, "b": 0.6, "diff": 0.1}) == "better"
    # lm-eval's direction: a larger mean |LL_more - LL_less| of a CrowS pair is worse
    assert verdict_words({**sig, "task": "crows_pairs", "metric": "likelihood_diff", "a": 4.6, "b": 5.6,
                          "diff": 1.0}) == "worse"
    assert verdict_words({"verdict": "not distinguishable from noise", "metric": "SS"}) == "not distinguishable from noise"


def test_the_exported_folder_is_hub_ready(fairgptq_export):
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file
    card = ModelCard.load(fairgptq_export / "README.md")
    assert card.data.library_name == "transformers" and "gptq" in card.data.tags and "4-bit" in card.data.tags
    assert "## How it was made" in card.text and "## Limits" in card.text
    t = load_file(str(fairgptq_export / "model.safetensors"))
    assert t["model.embed_tokens.weight"].dtype == torch.float16  # unquantized tensors: float16 by default
    umask = os.umask(0)
    os.umask(umask)
    for f in Path(fairgptq_export).iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


def test_a_pipeline_exports_a_model_card_whose_numbers_are_the_runs(tmp_path, real_data_dir):
    from huggingface_hub import ModelCard
    from fairgptq.pipeline import load_pipeline
    from fairgptq.pipeline.runner import run_pipeline
    from tiny_model import tiny_pipeline, write_pair_file, write_yaml
    csv = real_data_dir / "crows_pairs" / "crows_pairs_anonymized.csv"
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "m"), write_pair_file(tmp_path / "p.jsonl"),
                        evaluation={"tasks": ["crows_pairs"], "limit": 12, "paths": {"crows_pairs": str(csv)},
                                    "float_baseline": True, "plain_baseline": True})
    out = run_pipeline(load_pipeline(write_yaml(tmp_path / "t.yaml", raw)), tmp_path / "run")
    results = json.loads((out / "results.json").read_text())
    card = ModelCard.load(out / "model" / "README.md")
    metrics = {f"{r.dataset_type}.{r.metric_type}": r.metric_value for r in card.data.eval_results}
    assert metrics and all(metrics[k] == pytest.approx(results["metrics"][k], abs=1e-4) for k in metrics)
    assert "− plain GPTQ" in card.text and "float model" in card.text and "fair_pairs" in card.text
    assert results["export"]["reload_check"] == "identical logits"


def test_several_checkpoints_share_one_evaluation_of_the_base(base_dir, fairgptq_export, real_data_dir, tmp_path,
                                                              monkeypatch):
    import shutil
    import fairgptq.audit as audit_module
    evaluated = []
    real = audit_module._evaluated
    monkeypatch.setattr(audit_module, "_evaluated", lambda name, *a, **k: evaluated.append(name) or real(name, *a, **k))
    second = shutil.copytree(fairgptq_export, tmp_path / "second")
    out = tmp_path / "many"
    assert main(["audit", str(base_dir), str(fairgptq_export), str(second), "--tasks", "crows_pairs",
                 "--limit", "12", "--out", str(out)]) == 0
    assert evaluated == [str(base_dir), str(fairgptq_export), str(second)]
    first, again = (json.loads((out / name / "audit.json").read_text()) for name in ("fairgptq", "second"))
    assert first["quantized"]["name"] == str(fairgptq_export) and again["quantized"]["name"] == str(second)
    # the same checkpoint twice against one evaluation of the base: the same rows
    assert [(r["a"], r["b"], r["diff"]) for r in first["rows"]] == [(r["a"], r["b"], r["diff"]) for r in again["rows"]]
    assert first["base"]["dtype"] == first["quantized"]["dtype"] == "float32"


def test_an_occupied_output_folder_is_refused_before_anything_is_evaluated(base_dir, fairgptq_export, tmp_path):
    from fairgptq.audit import audit_all
    from fairgptq.core.errors import ConfigError
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        audit_all(str(base_dir), [str(fairgptq_export), str(fairgptq_export)], ["crows_pairs"],
                  outs=[tmp_path / "free", taken])
    assert (taken / "notes.txt").read_text() == "mine" and not (tmp_path / "free").exists()


@pytest.fixture(scope="module")
def smollm2_folder(smollm2_base, tmp_path_factory):
    """SmolLM2 as a transformers folder: what the foreign quantizers read."""
    model, tok = smollm2_base
    folder = tmp_path_factory.mktemp("smollm2") / "base"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.real_model
@pytest.mark.parametrize("quantizer", ["gptqmodel", "compressed_tensors"])
def test_foreign_checkpoints_of_smollm2_are_audited_against_it(quantizer, smollm2_folder, real_data_dir, tmp_path):
    """GPTQModel's GPTQ (g128, a few WikiText-2 windows) and a compressed-tensors RTN checkpoint (g64), each
    made here from SmolLM2 by its own package, then audited against the float model on the same items."""
    pytest.importorskip({"gptqmodel": "gptqmodel", "compressed_tensors": "compressed_tensors"}[quantizer],
                        reason=f"{quantizer} is not installed: bash scripts/setup.sh")
    writers = _writers()
    if quantizer == "gptqmodel":
        from fairgptq.datasets_adapters.wikitext import calibration_windows
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(smollm2_folder)
        texts = [tok.decode(row) for b in calibration_windows(tok, n=8, seqlen=128, seed=0) for row in b.input_ids]
        quantized = writers.write_gptqmodel_export(smollm2_folder, tmp_path / "q", texts)
    else:
        quantized = writers.write_compressed_tensors_rtn(smollm2_folder, tmp_path / "q")
    report = audit(str(smollm2_folder), str(quantized), ["crows_pairs", "wikitext2"], out=tmp_path / "a", limit=24,
                   max_tokens=2048, seqlen=512, n_boot=200)
    rows = {f"{r['task']}.{r['metric']}": r for r in report["rows"]}
    assert rows["crows_pairs.pct_stereotype"]["n"] == 24
    assert report["quantized"]["format"].startswith({"gptqmodel": "GPTQ 4-bit g128",
                                                     "compressed_tensors": "compressed-tensors"}[quantizer])
    ppl = rows["wikitext2.perplexity"]
    assert ppl["b"] != ppl["a"] and math.isfinite(ppl["b"])  # 4-bit weights change the model, finitely
    assert (tmp_path / "a" / "audit.json").is_file() and (tmp_path / "a" / "audit.md").is_file()


# issue 35: the wrong pair is refused before anything is evaluated -----------------------------------------------

@pytest.fixture
def no_evaluation(monkeypatch):
    """Fails the test if an audit starts evaluating (every refusal below must come first)."""
    import fairgptq.audit as audit_module
    started = []
    monkeypatch.setattr(audit_module, "_evaluated", lambda name, *a, **k: started.append(name) or 1 / 0)
    return started


def _cli_error(capsys, *argv) -> tuple[int, str]:
    rc = main(["audit", *map(str, argv), "--tasks", "crows_pairs", "--limit", "4"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, " ".join(err.split())


def test_the_base_against_itself_is_refused(base_dir, no_evaluation, capsys):
    rc, err = _cli_error(capsys, base_dir, base_dir)
    assert rc == 2 and "the base model's own folder" in err and not no_evaluation


def test_a_copy_of_the_base_is_refused_as_identical_weights(base_dir, tmp_path, no_evaluation, capsys):
    import shutil
    copy = shutil.copytree(base_dir, tmp_path / "copy")
    rc, err = _cli_error(capsys, base_dir, copy)
    assert rc == 2 and "exactly the weights of" in err and not no_evaluation


def _swap_he_she(folder):
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    vocab["he"], vocab["she"] = vocab["she"], vocab["he"]
    path.write_text(json.dumps(data))


def test_a_checkpoint_with_a_swapped_tokenizer_is_never_blamed_on_quantization(base_dir, fairgptq_export, tmp_path,
                                                                               no_evaluation, capsys):
    import shutil
    swapped = shutil.copytree(fairgptq_export, tmp_path / "swapped")
    _swap_he_she(swapped)
    rc, err = _cli_error(capsys, base_dir, swapped)
    assert rc == 2 and "tokenizer.json: content hash differs" in err
    rc, err = _cli_error(capsys, base_dir, swapped, "--trust-unverified")  # trusted files, still not comparable
    assert rc == 2 and "vocabularies differ" in err and "'he'" in err and not no_evaluation


def test_a_foreign_checkpoint_with_other_special_tokens_is_refused(base_dir, gptqmodel_export, tmp_path,
                                                                   no_evaluation, capsys):
    import shutil
    other = shutil.copytree(gptqmodel_export, tmp_path / "other")
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["eos_token"] = "<unk>"
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    rc, err = _cli_error(capsys, base_dir, other)
    assert rc == 2 and "special tokens differ" in err and "eos_token" in err and not no_evaluation


def test_another_architecture_is_refused(base_dir, tmp_path, no_evaluation, capsys):
    smaller = save_tiny_llama(tmp_path / "smaller", hidden=32)
    rc, err = _cli_error(capsys, base_dir, smaller)
    assert rc == 2 and "architectures differ" in err and "hidden_size: 64 vs 32" in err and not no_evaluation


@pytest.mark.parametrize("damage, cause", [
    (lambda f: (f / "model.safetensors").unlink(), "model.safetensors: missing"),
    (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 64), "content hash differs"),
], ids=["missing-weights", "corrupt-weights"])
def test_every_checkpoint_is_opened_and_verified_before_the_base_is_evaluated(base_dir, fairgptq_export, tmp_path,
                                                                              damage, cause, no_evaluation, capsys):
    import shutil
    good = shutil.copytree(fairgptq_export, tmp_path / "good")
    bad = shutil.copytree(fairgptq_export, tmp_path / "bad")
    damage(bad)
    rc, err = _cli_error(capsys, base_dir, good, bad)
    assert rc == 2 and str(bad) in err and cause in err and not no_evaluation


def test_audit_out_names_audits_own_files(base_dir, fairgptq_export, tmp_path, no_evaluation, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    rc, err = _cli_error(capsys, base_dir, fairgptq_export, "--out", taken)
    assert rc == 2 and "audit.json" in err and "compare.json" not in err and taken.read_text() == "mine"
    folder = tmp_path / "done"
    folder.mkdir()
    (folder / "audit.json").write_text("{}")
    rc, err = _cli_error(capsys, base_dir, fairgptq_export, "--out", folder)
    assert rc == 2 and "already holds audit.json" in err and (folder / "audit.json").read_text() == "{}"
