"""The run report compares the quantized model with the float model and plain GPTQ (delta columns)."""
from __future__ import annotations

import json


from fairgptq.pipeline import load_pipeline
from fairgptq.evaluation.items import read_items
from fairgptq.pipeline.plain_baseline import plain_spec
from fairgptq.analysis.run_report import metrics_table
from fairgptq.pipeline.runner import run_pipeline

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


def test_metrics_table_shows_each_reference_with_its_difference():
    table = metrics_table({"wikitext2.perplexity": 22.5}, {"wikitext2.perplexity": 17.0},
                          {"wikitext2.perplexity": 22.0})
    header, _, row = table.splitlines()
    assert header == "| metric | quantized | float | Δ vs float | plain GPTQ | Δ vs plain GPTQ |"
    assert row == "| wikitext2.perplexity | 22.500 | 17.000 | 5.500 | 22.000 | 0.500 |"
    only_float = metrics_table({"m": 1.0}, {"m": 0.5}, {})
    assert "plain GPTQ" not in only_float and "Δ vs float" in only_float
    assert "float_baseline" in metrics_table({"m": 1.0}, {}, {})  # no reference: says how to get one


def test_plain_spec_zeroes_every_alpha_and_keeps_the_rest(tmp_path):
    raw = tiny_pipeline(tmp_path / "m", tmp_path / "p.jsonl",
                        objectives=[{"name": "fair_pairs", "pairs": "mine", "params": {"alpha": 0.3, "layer_alpha": {1: 0.5}}}])
    from fairgptq.pipeline.loading import validate

    spec = validate(raw, "x.yaml", environment=False)
    plain = plain_spec(spec)
    assert plain.objectives[0].params["alpha"] == 0.0 and plain.objectives[0].params["layer_alpha"] is None
    assert plain.objectives[0].params["roles"] == spec.objectives[0].params["roles"] and plain.quantization == spec.quantization
    assert spec.objectives[0].params["alpha"] == 0.3  # the run's own spec is untouched


def test_a_run_with_both_references_reports_them(tmp_path, real_data_dir):
    csv = real_data_dir / "crows_pairs" / "crows_pairs_anonymized.csv"
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "model"), write_pair_file(tmp_path / "pairs.jsonl"),
                        evaluation={"tasks": ["crows_pairs"], "limit": 8, "paths": {"crows_pairs": str(csv)},
                                    "float_baseline": True, "plain_baseline": True},
                        export={"enabled": False})
    out = run_pipeline(load_pipeline(write_yaml(tmp_path / "t.yaml", raw)), tmp_path / "out")
    r = json.loads((out / "results.json").read_text())
    assert r["plain_baseline"]["tasks"]["crows_pairs"]["n"] == 8 and r["baseline"]["tasks"]["crows_pairs"]["n"] == 8
    assert "plain_gptq" in r["timings"]
    report = (out / "report.md").read_text()
    assert "| metric | quantized | float | Δ vs float | plain GPTQ | Δ vs plain GPTQ |" in report
    row = next(line for line in report.splitlines() if line.startswith("| crows_pairs.pct_stereotype"))
    assert "–" not in row
    # and the paired test against plain GPTQ: item records of both, one sentence per metric with its verdict
    assert read_items(out / "plain" / "items")["crows_pairs"] and read_items(out / "float" / "items")["crows_pairs"]
    pct = next(row for row in r["vs_plain"] if row["metric"] == "pct_stereotype")
    plain_choices = [it["choice"] for it in read_items(out / "plain" / "items")["crows_pairs"]]
    run_choices = [it["choice"] for it in read_items(out / "items")["crows_pairs"]]
    assert pct["discordant"]["a_only"] == sum(a > b for a, b in zip(plain_choices, run_choices))
    assert pct["verdict"] in ("significant", "not distinguishable from noise")
    assert "## Against plain GPTQ on the same calibration" in report and "pct_stereotype:" in report
