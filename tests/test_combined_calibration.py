"""Broader calibration for the likelihood step: several pair sets combined in one objective, every pair of a
split (``n: all``), and CrowS-Pairs refused as a calibration source while the evaluation scores it."""
from __future__ import annotations

import copy

import pytest

from fairgptq.pipeline import PipelineError, validate
from fairgptq.pipeline.build import objective_pairs, pair_sets
from fairgptq.registry import default_registry

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A real model folder: validate checks config.json, weights and shapes (an empty folder is refused)."""
    return save_tiny_llama(tmp_path_factory.mktemp("combined") / "model")


@pytest.fixture
def raw(tmp_path, real_data_dir, model_dir):
    raw = tiny_pipeline(model_dir, write_pair_file(tmp_path / "pairs.jsonl"))
    raw["calibration"]["pairs"] = {
        "intra": {"source": "stereoset", "split": "calibration", "n": 40},
        "inter": {"source": "stereoset", "params": {"kind": "intersentence", "with_context": True}, "n": 30},
        "reddit": {"source": "redditbias", "n": 20},
        "holistic": {"source": "holistic_bias", "n": 20},
        "templates": {"source": "templates", "n": "all"},
    }
    raw["calibration"]["text"] = {"n": 2, "seqlen": 16}
    raw["objectives"] = [{"name": "likelihood_pairs", "pairs": ["intra", "inter", "reddit", "holistic", "templates"],
                          "params": {"target": "auto"}}]
    return raw


def test_pair_sets_combine_in_one_objective(raw):
    spec = validate(raw, "p.yaml")
    sets = pair_sets(spec, default_registry())
    assert sets["templates"].info["n_requested"] is None and sets["templates"].info["n"] > 0  # n: all
    combined = objective_pairs(spec.objectives[0], sets)
    assert len(combined) == sum(len(sets[n].pairs) for n in spec.objectives[0].pair_set_names())
    assert {p.source_id.split(":")[0] for p in combined} >= {"stereoset"}
    assert spec.objectives[0].pair_set_label() == "intra+inter+reddit+holistic+templates"
    from fairgptq.pipeline.arguments import objective_arguments
    factory = default_registry().get("objectives", "likelihood_pairs").factory
    assert objective_arguments(spec.objectives[0], factory, spec.calibration, pairs=combined)["pair_set"] == \
        "intra+inter+reddit+holistic+templates"


def _problems(raw) -> dict[str, str]:
    with pytest.raises(PipelineError) as e:
        validate(raw, "p.yaml")
    return dict(e.value.problems)


def test_an_unknown_or_repeated_pair_set_in_the_list_is_refused(raw):
    bad = copy.deepcopy(raw)
    bad["objectives"][0]["pairs"] = ["intra", "nope"]
    assert "no pair set 'nope'" in _problems(bad)["objectives[0].pairs"]
    bad["objectives"][0]["pairs"] = ["intra", "intra"]
    assert "each once" in str(_problems(bad))


def test_crows_pairs_is_refused_as_calibration_while_it_is_evaluated(raw):
    raw = copy.deepcopy(raw)
    raw["calibration"]["pairs"]["crows"] = {"source": "crows_pairs", "n": 50}
    raw["objectives"][0]["pairs"] = ["intra", "crows"]
    raw["evaluation"] = {"tasks": ["crows_pairs"]}
    assert "is CrowS-Pairs, which the evaluation also scores" in _problems(raw)["objectives[0].pairs"]
    # the held-out half of crows_pairs_english, calibrating on the other half: allowed
    raw["calibration"]["pairs"]["crows"]["split"] = "calibration"
    raw["evaluation"] = {"tasks": ["crows_pairs_english"], "pair_split": "holdout"}
    validate(raw, "p.yaml")
    raw["evaluation"] = {"tasks": ["stereoset"], "stereoset_split": "holdout"}  # not evaluated: allowed
    validate(raw, "p.yaml")
