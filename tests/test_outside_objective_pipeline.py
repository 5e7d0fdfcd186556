"""An outside objective whose strength is not called ``alpha`` goes through the whole pipeline machinery.

Validate (its own sentences count as data for H), a run with a plain baseline (its twin has its own
strength at 0, the rest kept), a repeated sweep (the strength-0 point is plain and every other
point's reference), the seed report, and the pair gap's targeted roles: each asks the objective's
settings model (tests/outside_objective.py), none reads a setting name.
"""
from __future__ import annotations

import json

import pytest

from fairgptq.pipeline import load_pipeline
from fairgptq.pipeline.loading import validate
from fairgptq.pipeline.plain_baseline import plain_spec
from fairgptq.pipeline.runner import run_pipeline

from tiny_model import save_tiny_llama, write_pair_file, write_yaml

TEXTS = ["the man is a good doctor and she was very kind", "they were not good people and he was lazy",
         "the woman was a strong engineer", "he is an engineer and she is a teacher"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, real_data_dir):
    d = tmp_path_factory.mktemp("outside")
    csv = real_data_dir / "crows_pairs" / "crows_pairs_anonymized.csv"
    pairs = write_pair_file(d / "pairs.jsonl")
    source = {"source": "pair_file", "params": {"path": str(pairs), "category_col": "category"}}
    return {"name": "outside", "plugins": ["outside_objective"], "model": {"name": str(save_tiny_llama(d / "model"))},
            "calibration": {"pairs": {}},
            "quantization": {"bits": 4, "group_size": 32},
            "objectives": [{"name": "ridge", "params": {"weight": 0.5, "roles": ["mlp_out"], "texts": TEXTS}}],
            "evaluation": {"tasks": ["crows_pairs"], "limit": 8, "paths": {"crows_pairs": str(csv)},
                           "pair_gap": {"pairs": {**source, "split": "all"}}},
            "export": {"enabled": False}}, d


def test_validate_takes_the_objectives_own_sentences_as_data_for_h(base):
    raw, _ = base
    spec = validate(raw, "x.yaml")  # no calibration text: the objective's texts are its data for H
    plain = plain_spec(spec)
    assert plain.objectives[0].params["weight"] == 0.0
    assert plain.objectives[0].params["texts"] == TEXTS and plain.objectives[0].params["roles"] == ["mlp_out"]
    without_texts = json.loads(json.dumps(raw))
    without_texts["objectives"][0]["params"]["texts"] = []
    from fairgptq.pipeline.loading import PipelineError
    with pytest.raises(PipelineError, match="no data for H"):
        validate(without_texts, "x.yaml")


def test_a_run_with_a_plain_baseline_switches_the_outside_term_off(base):
    raw, d = base
    run = dict(raw, evaluation={**raw["evaluation"], "plain_baseline": True})
    out = run_pipeline(load_pipeline(write_yaml(d / "run.yaml", run)), d / "run")
    r = json.loads((out / "results.json").read_text())
    assert r["plain_baseline"]["tasks"]["crows_pairs"]["n"] == 8
    assert any(row["metric"] == "pct_stereotype" for row in r["vs_plain"])
    assert {m["role"] for m in r["quantization"]["modules"] if m["fair_mode"]} == {"mlp_out"}
    assert r["pair_gap"]["n_targeted"] == 2  # mlp_out of both layers: the roles the objective names


def test_a_repeated_sweep_pairs_each_point_with_its_seeds_plain_twin(base):
    raw, d = base
    sweep = dict(raw, repeats={"seeds": [0, 1]},
                 sweep={"cases": [{"objectives[0].params.weight": 0.0}, {"objectives[0].params.weight": 0.5}]})
    out = run_pipeline(load_pipeline(write_yaml(d / "sweep.yaml", sweep)), d / "sweep")
    summary = json.loads((out / "results.json").read_text())
    plain = {u["name"]: u["plain"] for u in summary["points"]}
    assert plain == {"000_weight=0.0/seed=0": True, "001_weight=0.5/seed=0": False,
                     "000_weight=0.0/seed=1": True, "001_weight=0.5/seed=1": False}
    refs = [u["vs_reference"]["reference"] for u in summary["points"] if not u["plain"]]
    assert refs == ["000_weight=0.0/seed=0", "000_weight=0.0/seed=1"]
    groups = {g["group"]: g for g in summary["groups"]}
    assert "crows_pairs.pct_stereotype" in groups["001_weight=0.5"]["vs_reference"]["across_seeds"]
