"""A whole pipeline on a tiny model: run directory contents, record, report, export that reloads exactly."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from fairgptq.export import fairgptq_record, load_gptq_checkpoint
from fairgptq.pipeline import load_pipeline
from fairgptq.pipeline.rundir import RunDirError
from fairgptq.pipeline.runner import run_pipeline

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    raw = tiny_pipeline(save_tiny_llama(d / "model"), write_pair_file(d / "pairs.jsonl"))
    pipe = load_pipeline(write_yaml(d / "tiny.yaml", raw))
    return run_pipeline(pipe, d / "out"), pipe


def test_run_directory_holds_everything(run_dir):
    out, _ = run_dir
    for name in (".complete", "config.yaml", "run.log", "results.json", "report.md", "delta_w.png",
                 "model/model.safetensors", "model/quantize_config.json", "model/config.json"):
        assert (out / name).is_file(), name


def test_results_record(run_dir):
    out, pipe = run_dir
    r = json.loads((out / "results.json").read_text())
    assert r["config"] == pipe.resolved() == yaml.safe_load((out / "config.yaml").read_text())
    assert r["pair_sets"]["mine"]["n"] == 8 and len(r["pair_sets"]["mine"]["sha256_16"]) == 16
    assert r["objectives"][0]["pair_set"] == "mine" and r["objectives"][0]["alpha"] == 0.1
    mods = r["quantization"]["modules"]
    assert len(mods) == 14 and all("stability" in m for m in mods)
    assert sum(m["delta_w_rel"] is not None for m in mods) == 4  # o_proj + down_proj in 2 layers
    assert r["export"]["identical_logits"] is True and r["export"]["checkpoint_format"] == "gptq"
    assert {"load_model", "quantize", "export", "total"} <= set(r["timings"])
    assert r["versions"]["torch"] == torch.__version__ and r["seeds"]["pipeline"] == 0
    assert "fair_pairs" in (out / "report.md").read_text()


def test_the_record_reads_back_typed_and_a_broken_one_names_its_field(run_dir, tmp_path):
    from fairgptq.run_record import RunRecordError, check_run_record, read_run_record, read_run_section
    out, _ = run_dir
    record = read_run_record(out)
    assert record.export is not None and record.export.path == "model" and (out / record.export.path).is_dir()
    assert record.quantization.summary["overshoots"] >= 0 and record.metrics == read_run_section(out, "metrics")
    data = json.loads((out / "results.json").read_text())
    with pytest.raises(RunRecordError, match="metrics"):
        check_run_record({k: v for k, v in data.items() if k != "metrics"})
    with pytest.raises(RunRecordError, match="timings"):
        check_run_record({**data, "timings": {"total": "fast"}})
    with pytest.raises(RunRecordError, match="no run record"):
        read_run_record(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"metrics": {"wikitext2.perplexity": "low"}}))
    with pytest.raises(RunRecordError, match="metrics.wikitext2.perplexity does not have the shape.*got 'low'"):
        read_run_section(tmp_path, "metrics")


def test_exported_checkpoint_carries_the_fairness_record(run_dir):
    out, _ = run_dir
    model, tok, qc = load_gptq_checkpoint(out / "model")
    assert fairgptq_record(qc)["pipeline"] == "tiny" and fairgptq_record(qc)["pair_sets"]["mine"]["n"] == 8
    assert fairgptq_record(qc)["objectives"][0]["pairs_sha256_16"] == \
        json.loads((out / "results.json").read_text())["pair_sets"]["mine"]["sha256_16"]


def test_existing_run_is_not_overwritten_without_force(run_dir):
    out, pipe = run_dir
    before = (out / "results.json").read_text()
    with pytest.raises(RunDirError, match="already exists"):
        run_pipeline(pipe, out)
    assert (out / "results.json").read_text() == before


def test_external_plugin_used_by_name_from_a_pipeline(tmp_path, monkeypatch):
    """A pair source that lives outside the package (examples/plugins) runs from YAML, no edit to fairgptq."""
    from pathlib import Path

    from fairgptq.registry import default_registry

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "plugins"))
    assert "name_swap" not in default_registry().names("pair_sources")
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "model"), write_pair_file(tmp_path / "unused.jsonl"),
                        plugins=["name_swap_pairs"],
                        calibration={"pairs": {"names": {"source": "name_swap", "params": {"swaps": [["man", "woman"], ["he", "she"]]}}}},
                        objectives=[{"name": "fair_pairs", "pairs": "names", "params": {"alpha": 0.2}}],
                        export={"enabled": False})
    out = run_pipeline(load_pipeline(write_yaml(tmp_path / "ext.yaml", raw)), tmp_path / "out")
    r = json.loads((out / "results.json").read_text())
    assert r["pair_sets"]["names"]["source"] == "name_swap" and r["pair_sets"]["names"]["n"] == 6
    assert r["objectives"][0]["pair_set"] == "names"
    assert sum(m["delta_w_rel"] is not None and m["delta_w_rel"] > 0 for m in r["quantization"]["modules"]) == 4


def test_two_pair_objectives_on_two_pair_sets_run_together(tmp_path):
    """The cross-lingual pipeline's shape: one pair term per language, each on its own pair set."""
    pairs = write_pair_file(tmp_path / "pairs.jsonl")
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "model"), pairs, export={"enabled": False})
    mine = raw["calibration"]["pairs"]["mine"]
    raw["calibration"]["pairs"]["other"] = {**mine, "seed": 1}
    raw["objectives"] = [{"name": "fair_pairs", "pairs": "mine", "params": {"alpha": 0.1}},
                         {"name": "fair_pairs", "pairs": "other", "params": {"alpha": 0.05}}]
    out = run_pipeline(load_pipeline(write_yaml(tmp_path / "two.yaml", raw)), tmp_path / "out")
    r = json.loads((out / "results.json").read_text())
    assert [o["pair_set"] for o in r["objectives"]] == ["mine", "other"]


def test_target_auto_on_combined_pair_sets_records_its_curve_in_results_and_report(tmp_path):
    """Issue 33: one likelihood objective on two pair sets combined, its strength chosen on held-out calibration
    pairs; the grid, the curve and the choice are in results.json and the report."""
    pairs = write_pair_file(tmp_path / "pairs.jsonl")
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "model"), pairs, export={"enabled": False})
    mine = raw["calibration"]["pairs"]["mine"]
    raw["calibration"]["pairs"]["templates"] = {"source": "templates", "n": "all"}
    raw["calibration"]["text"] = {"path": str(tmp_path / "t.txt"), "n": 2, "seqlen": 16}
    (tmp_path / "t.txt").write_text("the doctor said the nurse was kind and the man was strong " * 40)
    raw["calibration"]["pairs"]["mine"] = mine
    raw["objectives"] = [{"name": "likelihood_pairs", "pairs": ["mine", "templates"],
                          "params": {"target": "auto", "metric": "identity", "validation_fraction": 0.5,
                                     "auto_grid": [0, 0.5, 1, 2]}}]
    out = run_pipeline(load_pipeline(write_yaml(tmp_path / "auto.yaml", raw)), tmp_path / "out")
    r = json.loads((out / "results.json").read_text())
    o = r["objectives"][0]
    assert o["pair_set"] == "mine+templates" and o["target"] == "auto"
    assert o["auto"]["grid"] == [0.0, 0.5, 1.0, 2.0] and len(o["auto"]["curve"]) == 4
    assert o["target_chosen"] == o["auto"]["chosen"] in o["auto"]["grid"]
    assert o["auto"]["fit_pairs"] + o["auto"]["validation_pairs"] == o["pairs"]
    report = (out / "report.md").read_text()
    assert "Strength chosen on held-out calibration pairs" in report and f"Chosen target {o['auto']['chosen']}" in report
