"""Pipeline validation: one clear message per problem, with the YAML path of the offending key."""
from __future__ import annotations

import copy

import pytest

from fairgptq.core.errors import ConfigError, FairGPTQError
from fairgptq.pipeline import PipelineError, apply_overrides, load_pipeline, validate
from fairgptq.pipeline import keypath

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A real model folder: validate checks config.json, weights and shapes (an empty folder is refused)."""
    return save_tiny_llama(tmp_path_factory.mktemp("validation") / "model")


@pytest.fixture
def raw(tmp_path, model_dir):
    return tiny_pipeline(model_dir, write_pair_file(tmp_path / "pairs.jsonl"))


def problems(raw: dict) -> dict[str, str]:
    with pytest.raises(PipelineError) as e:
        validate(raw, "p.yaml")
    return dict(e.value.problems)


def test_valid_pipeline_passes_and_fills_defaults(raw):
    spec = validate(raw)
    assert spec.quantization.sym is True and spec.objectives[0].params["roles"] == ["attn_out", "mlp_out"]
    assert spec.backend.name == "cpu" and spec.export.checkpoint_format == "auto"


def test_shipped_pipelines_are_valid():
    from pathlib import Path
    files = sorted(Path(__file__).parents[1].glob("pipelines/**/*.yaml"))
    assert any(f.name == "demo.yaml" for f in files)
    for f in files:
        load_pipeline(f)


def test_pipeline_without_order_keys_saves_static_act_order_and_a_pinned_natural_order_still_matches(raw):
    raw["quantization"] = {"bits": 4, "group_size": 32}
    default = validate(raw).model_dump(mode="json")["quantization"]
    assert (default["act_order"], default["static_groups"], default["act_group_aware"]) == (True, True, False)
    raw["quantization"] = {"bits": 4, "group_size": 32, "act_group_aware": True}
    gar = validate(raw).model_dump(mode="json")["quantization"]
    assert (gar["act_order"], gar["static_groups"], gar["act_group_aware"]) == (False, False, True)
    raw["quantization"] = {"bits": 4, "group_size": 32, "act_order": False, "static_groups": False}
    saved = validate(raw).model_dump(mode="json")
    assert (saved["quantization"]["act_order"], saved["quantization"]["static_groups"]) == (False, False)
    assert validate(saved).model_dump(mode="json") == saved   # the saved config resolves to itself: --reuse matches


# recorded before static act-order became the default, so they pin the natural order their results used
STATIC_ACT_ORDER_PIPELINES = {"demo.yaml", "recipe_parity.yaml"}


def test_shipped_pipelines_that_recorded_results_without_reordering_still_resolve_to_it():
    from pathlib import Path

    from fairgptq.pipeline.schema import QuantizationSpec
    files = sorted(Path(__file__).parents[1].glob("pipelines/**/*.yaml"))
    assert {f.name for f in files} >= STATIC_ACT_ORDER_PIPELINES
    for f in files:
        pipe = load_pipeline(f, environment=False)
        sections = [pipe.spec.quantization] + [QuantizationSpec.model_validate(p.raw.get("quantization", {}))
                                               for p in pipe.points]
        natural = f.name not in STATIC_ACT_ORDER_PIPELINES
        for q in sections:
            order = (q.act_order, q.static_groups, q.act_group_aware)
            assert order == ((False, False, False) if natural else (True, True, False)), (f.name, order)


def test_unknown_key_names_its_path_and_the_allowed_keys(raw):
    raw["quantization"]["bitz"] = 3
    raw["objectives"][0]["alpah"] = 0.1
    raw["objectives"][0]["params"]["alpah"] = 0.1
    p = problems(raw)
    assert p["quantization.bitz"].startswith("unknown key; allowed keys: bits, group_size")
    assert p["objectives[0].alpah"] == "unknown key; allowed keys: name, pairs, params"
    assert p["objectives[0].params"].startswith("unknown setting(s) ['alpah'] of objective 'fair_pairs'; "
                                                "its settings: alpha, roles, layers")


def test_wrong_types(raw):
    raw["quantization"]["sym"] = "maybe"
    raw["calibration"]["pairs"]["mine"]["n"] = "many"
    raw["objectives"][0]["params"]["layers"] = {"a": 1}
    p = problems(raw)
    assert p["quantization.sym"] == "must be true or false (got 'maybe')"
    assert p["calibration.pairs.mine.n"] == "must be an integer (got 'many')"
    assert p["objectives[0].params.layers"].startswith("must be one of ['all', 'lower', 'upper', 'lower+upper']")


def test_bad_ranges(raw):
    raw["objectives"][0]["params"]["alpha"] = -1
    raw["quantization"].update(bits=5, damp=0, group_size=0)
    p = problems(raw)
    assert p["objectives[0].params.alpha"].startswith("must be >= 0")
    assert p["quantization.bits"] == "must be one of 2, 3, 4 or 8 (got 5)"
    assert p["quantization.damp"] == "must be > 0 (got 0)"
    assert p["quantization.group_size"].startswith("must be -1 (one group per row) or a positive integer")
    assert "objectives[0].params.alpha: must be >= 0" in str(PipelineError("p.yaml", list(p.items())))


def test_alpha_mapping_is_checked_per_role(raw):
    raw["objectives"][0]["params"]["alpha"] = {"attn_out": 0.1, "mlp_outt": 0.2}
    assert "unknown role(s) ['mlp_outt']" in problems(raw)["objectives[0].params.alpha"]


def test_missing_required_sections(raw):
    del raw["model"]
    assert problems(raw) == {"model": "required key is missing"}


def test_missing_files(raw, tmp_path):
    raw["calibration"]["pairs"]["mine"]["params"]["path"] = str(tmp_path / "nope.jsonl")
    raw["model"]["name"] = str(tmp_path / "no-model")
    raw["evaluation"] = {"tasks": ["crows_pairs"], "paths": {"crows_pairs": str(tmp_path / "c.csv")}}
    p = problems(raw)
    assert p["calibration.pairs.mine.params.path"] == f"file not found: {tmp_path / 'nope.jsonl'}"
    assert p["model.name"].startswith("model path not found")
    assert p["evaluation.paths.crows_pairs"].startswith("file not found")


def test_unknown_plugins_and_tasks(raw):
    raw["objectives"][0]["name"] = "fair_pair"
    raw["calibration"]["pairs"]["mine"]["source"] = "stereo_set"
    raw["backend"] = {"name": "tpu"}
    raw["evaluation"] = {"tasks": ["wikitext2", "crows"]}
    raw["plugins"] = ["no_such_module_xyz"]
    p = problems(raw)
    assert p["objectives[0].name"].startswith("unknown objective 'fair_pair'; available: fair_pairs")
    assert p["calibration.pairs.mine.source"].startswith("unknown pair source 'stereo_set'; available:")
    assert p["backend.name"].startswith("unknown backend 'tpu'; available: ")
    assert p["evaluation.tasks[1]"].startswith("unknown task 'crows'")
    assert "no_such_module_xyz" in p["plugins[0]"]


def test_per_task_limits_name_tasks_of_the_pipeline(raw):
    raw["evaluation"] = {"tasks": ["wikitext2", "boolq"], "limit": {"boolq": 200, "piqa": 100}}
    assert problems(raw)["evaluation.limit.piqa"].startswith("not one of this pipeline's tasks (wikitext2, boolq)")
    raw["evaluation"]["limit"] = {"boolq": 0}
    assert problems(raw)["evaluation.limit.boolq"] == "must be > 0 (got 0)"


def test_plugin_parameters_are_checked(raw):
    raw["calibration"]["pairs"]["mine"]["params"]["colour"] = "red"
    raw["objectives"][0]["params"] = {"beta": 1}
    raw["backend"] = {"name": "cpu", "params": {"gpu": True}}
    p = problems(raw)
    assert "colour" in p["calibration.pairs.mine.params"]
    assert p["objectives[0].params"].startswith("unknown setting(s) ['beta'] of objective 'fair_pairs'")
    assert "gpu" in p["backend.params"]


def test_references_between_sections(raw):
    raw["objectives"][0]["pairs"] = "theirs"
    assert problems(raw)["objectives[0].pairs"] == "no pair set 'theirs' under calibration.pairs; defined: mine"


def test_no_hessian_data_is_refused(raw):
    raw["objectives"][0]["params"]["calibrate_with_pairs"] = False
    assert problems(raw)["calibration"].startswith("no data for H")


def test_an_onloaded_pipeline_refuses_a_gradient_objective_at_validation(raw):
    raw["objectives"] = [{"name": "likelihood_pairs", "pairs": "mine", "params": {"target": 0.5}}]
    raw["calibration"]["text"] = {"n": 4}
    raw["model"]["onload"] = "always"
    assert "one decoder layer at a time" in problems(raw)["objectives[0].name"]
    raw["objectives"][0]["params"]["target"] = 0.0  # no term: no gradients asked
    assert "objectives[0].name" not in (problems(raw) if _fails(raw) else {})
    raw["objectives"][0]["params"]["target"] = 0.5
    raw["model"]["onload"] = "never"
    assert "objectives[0].name" not in (problems(raw) if _fails(raw) else {})


def _fails(raw: dict) -> bool:
    try:
        validate(raw, "p.yaml")
    except PipelineError:
        return True
    return False


def test_every_problem_is_reported_at_once(raw):
    raw["quantization"].update(bits=7, sym="x")
    raw["objectives"][0]["params"]["alpha"] = -2
    with pytest.raises(PipelineError) as e:
        validate(raw, "p.yaml")
    assert str(e.value).startswith("p.yaml: 3 problems\n")
    assert isinstance(e.value, FairGPTQError)


def test_validation_loads_no_model(raw, tmp_path, monkeypatch):
    import fairgptq.model_loading as ml
    monkeypatch.setattr(ml, "load_model", lambda *a, **k: pytest.fail("validation loaded a model"))
    load_pipeline(write_yaml(tmp_path / "p.yaml", raw))


def test_overrides(raw, tmp_path):
    out = apply_overrides(raw, ["objectives[0].params.alpha=0.5", "quantization.sym=false", "evaluation.tasks=[crows_pairs]"])
    assert out["objectives"][0]["params"]["alpha"] == 0.5 and out["quantization"]["sym"] is False
    assert out["evaluation"]["tasks"] == ["crows_pairs"] and raw["objectives"][0]["params"]["alpha"] == 0.1
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(raw, ["objectives[0].params.alpha"])
    with pytest.raises(ConfigError, match=r"objectives\[3\]: no such list item"):
        apply_overrides(raw, ["objectives[3].params.alpha=1"])
    path = write_yaml(tmp_path / "p.yaml", raw)
    with pytest.raises(PipelineError, match=r"objectives\[0\]\.params\.alpha: must be >= 0"):
        load_pipeline(path, ["objectives[0].params.alpha=-0.5"])


def test_sweep_keys_and_point_values_are_validated(raw, tmp_path):
    bad_key = dict(raw, sweep={"grid": {"objectives[0].alpa": [0.1]}})
    with pytest.raises(PipelineError, match=r"sweep.grid\['objectives\[0\].alpa'\]: no such key"):
        load_pipeline(write_yaml(tmp_path / "a.yaml", bad_key))
    bad_value = dict(raw, sweep={"grid": {"objectives[0].params.alpha": [0.1, -1]}})
    with pytest.raises(PipelineError, match=r"sweep point 001_alpha=-1: objectives\[0\]\.params\.alpha: must be >= 0"):
        load_pipeline(write_yaml(tmp_path / "b.yaml", bad_value))
    with pytest.raises(PipelineError, match="a sweep needs a grid or cases"):
        validate(dict(raw, sweep={}))


def test_yaml_problems_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_pipeline(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a pipeline file is a mapping"):
        load_pipeline(tmp_path / "list.yaml")


@pytest.mark.parametrize("path,parts", [("a.b[0].c", ["a", "b", 0, "c"]), ("x", ["x"]), ("l[-1]", ["l", -1])])
def test_keypaths_round_trip(path, parts):
    assert keypath.parse(path) == parts and keypath.render(parts) == path
    data = {"a": {"b": [{"c": 1}]}, "x": 2, "l": [3, 4]}
    assert keypath.get(copy.deepcopy(data), path) == {"a.b[0].c": 1, "x": 2, "l[-1]": 4}[path]


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a[x]", "a.[0]"])
def test_malformed_keypaths(bad):
    with pytest.raises(ConfigError, match="malformed key path"):
        keypath.parse(bad)


def test_yaml_merge_keys_work_and_duplicates_are_still_refused(tmp_path):
    from fairgptq.pipeline.loading import parse_yaml
    data = parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "t.yaml")
    assert data["other"] == {"x": 1, "y": 3}
    with pytest.raises(ConfigError, match="duplicate key 'y'"):
        parse_yaml("a:\n  y: 1\n  y: 2\n", "t.yaml")
