"""Evaluation tasks as a registry: one options model per task, one default per option, plugins from outside.

The example task (examples/plugins/occupation_pronouns.py) registers by module name like any
third-party plugin and runs through evaluate(), `fairgptq eval` and a pipeline's schema.
Tiny random model: this checks the plugin contract, not any bias figure.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fairgptq import cli
from fairgptq.core.errors import ConfigError, PluginError
from fairgptq.evaluation import evaluate
from fairgptq.evaluation.items import item_kind, read_items, summarize
from fairgptq.evaluation.stereoset import StereoSetOptions
from fairgptq.contract.tasks import EvaluationTask, TaskOptions
from fairgptq.evaluation.task_registry import option_specs, registered_tasks
from fairgptq.contract.hooks import hookimpl
from fairgptq.pipeline import PipelineError, validate
from fairgptq.pipeline.schema import EvaluationSpec
from fairgptq.registry import Registry, default_registry

from tiny_model import save_tiny_llama, tiny_llama, tiny_pipeline, write_pair_file

PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"
MODULE = "occupation_pronouns"


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    sys.modules.pop(MODULE, None)


@pytest.fixture
def in_default_registry(plugin_path):
    """The example registered in the process-wide registry (CLI, schema), removed again afterwards."""
    yield default_registry()
    if default_registry().pm.has_plugin(MODULE):
        default_registry().unregister(MODULE)


def test_builtin_tasks_are_registered_with_their_options():
    tasks = registered_tasks(Registry(entry_points=False))
    assert {"wikitext2", "crows_pairs", "stereoset", "piqa", "crows_pairs_french", "chbias"} <= set(tasks)
    assert all(t.description and "\n" not in t.description for t in tasks.values())
    specs = option_specs(tasks)
    assert specs["stereoset_split"].tasks == ("stereoset",) and "crows_pairs_french" in specs["crows_scoring"].tasks
    assert "chbias" in specs["holdout_fraction"].tasks and "stereoset" in specs["holdout_fraction"].tasks


def test_one_default_per_option_in_schema_and_evaluate(tmp_path):
    """The pipeline schema and evaluate() both take the default from the task's options model."""
    assert EvaluationSpec().options()["stereoset_split"] == StereoSetOptions().stereoset_split
    model, tok = tiny_llama(layers=1)
    wiki = tmp_path / "wiki.txt"
    wiki.write_text("the cat sat on the mat and the dog ran far away\n" * 40, encoding="utf-8")
    res = evaluate(model, tok, ["wikitext2"], paths={"wikitext2": wiki}, seqlen=16, max_tokens=64, progress=False)
    defaults = EvaluationSpec().options()
    assert {k: res["settings"][k] for k in defaults} == {**defaults, "seqlen": 16, "max_tokens": 64}
    with pytest.raises(ConfigError, match="'stereoset_split'.*'all', 'holdout' or 'calibration'"):
        evaluate(model, tok, ["wikitext2"], stereoset_split="train")
    with pytest.raises(ConfigError, match=r"unknown evaluation option 'pair_spilt'.*pair_split \(crows_pairs_english"):
        evaluate(model, tok, ["wikitext2"], pair_spilt="holdout")


def test_an_option_declared_twice_differently_is_refused():
    class Clash(TaskOptions):
        holdout_fraction: float = 0.25

    class Plugin:
        @hookimpl
        def fairgptq_evaluation_tasks(self):
            return {"clash": EvaluationTask("clash", "declares holdout_fraction again", lambda *a: {}, Clash)}

    reg = Registry(entry_points=False)
    reg.register(Plugin(), name="clash")
    with pytest.raises(PluginError, match="'holdout_fraction' is declared differently by tasks 'stereoset' and "
                                          "'clash'"):
        evaluate(None, None, ["clash"], registry=reg)


def test_example_task_runs_through_evaluate(plugin_path, tmp_path):
    reg = Registry(entry_points=False)
    assert MODULE not in registered_tasks(reg)
    reg.register_module(MODULE)
    info = reg.get("evaluation_tasks", MODULE)
    assert info.origin == f"module {MODULE}" and info.parameters()[0].startswith("pronoun_template=")
    model, tok = tiny_llama(layers=1)
    res = evaluate(model, tok, [MODULE, "crows_pairs"], registry=reg, limit={MODULE: 5}, progress=False,
                   pronoun_template="Yesterday the {occupation} told us {pronoun} was tired.",
                   paths={"crows_pairs": _crows_file(tmp_path)})
    task = res["tasks"][MODULE]
    assert task["n"] == 5 and task["template"].startswith("Yesterday") and len(task["items"]) == 5
    assert item_kind(task["items"]) == "preference" and summarize(task["items"])["n"] == 5
    assert res["settings"]["pronoun_template"].startswith("Yesterday") and res["tasks"]["crows_pairs"]["n"] == 2
    with pytest.raises(ConfigError, match="'pronoun_template'.*must contain"):
        evaluate(model, tok, [MODULE], registry=reg, pronoun_template="no slots here")
    with pytest.raises(ConfigError, match=r"pronoun_template \(occupation_pronouns\)"):
        evaluate(model, tok, [MODULE], registry=reg, pronoun_templat="x {occupation} {pronoun}")
    with pytest.raises(ConfigError, match="valid task names"):
        evaluate(model, tok, [MODULE])  # not in the process-wide registry: it was registered in reg only


def _crows_file(folder: Path) -> Path:
    path = folder / "crows.csv"
    path.write_text(",sent_more,sent_less,stereo_antistereo,bias_type\n"
                    "0,The man was a doctor.,The woman was a doctor.,stereo,gender\n"
                    "1,He is strong.,She is strong.,antistereo,gender\n", encoding="utf-8")
    return path


def test_example_task_runs_through_the_cli(in_default_registry, tmp_path, capsys):
    model = save_tiny_llama(tmp_path / "model", layers=1)
    occupations = tmp_path / "jobs.tsv"
    occupations.write_text("nurse\tshe\npilot\the\nbaker\tshe\n", encoding="utf-8")
    assert cli.main(["eval", str(model), "--module", MODULE, "--tasks", MODULE, "--set",
                     "pronoun_template=The {occupation} said {pronoun} was here.", "--out", str(tmp_path / "ev")]) == 0
    assert "pct_prefer_biased" in capsys.readouterr().out
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["tasks"][MODULE]["n"] == len(read_items(tmp_path / "ev" / "items")[MODULE]) == 8
    assert not in_default_registry.pm.has_plugin(MODULE)  # --module served that command only
    assert cli.main(["eval", str(model), "--module", MODULE, "--tasks", MODULE, "--set", "pronoun_template=no slots"]) == 2
    assert "must contain {occupation} and {pronoun}" in capsys.readouterr().err
    assert cli.main(["eval", str(model), "--tasks", "wikitext2", "--set", "stereoset_split"]) == 2
    assert "OPTION=VALUE" in capsys.readouterr().err


def test_eval_help_lists_the_tasks(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name, task in registered_tasks().items():
        assert name in out and task.description in " ".join(out.split()), name
    assert "stereoset_split='holdout'" in out


def test_pipeline_validates_a_plugin_task_option_by_its_model(in_default_registry, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    raw = tiny_pipeline(model_dir, write_pair_file(tmp_path / "pairs.jsonl"), plugins=[MODULE],
                        evaluation={"tasks": [MODULE], "pronoun_template": "The {occupation}: {pronoun}."})
    spec = validate(raw, "p.yaml", environment=False)
    assert spec.evaluation.options()["pronoun_template"] == "The {occupation}: {pronoun}."
    assert spec.model_dump(mode="json")["evaluation"]["stereoset_split"] == "holdout"  # every option recorded
    raw["evaluation"]["pronoun_template"] = "no slots"
    with pytest.raises(PipelineError) as e:
        validate(raw, "p.yaml", environment=False)
    assert dict(e.value.problems)["evaluation.pronoun_template"].startswith("must contain {occupation}")
    raw["evaluation"] = {"tasks": [MODULE], "pronoun_templte": "x"}
    with pytest.raises(PipelineError) as e:
        validate(raw, "p.yaml", environment=False)
    message = dict(e.value.problems)["evaluation.pronoun_templte"]
    assert message.startswith("unknown key; allowed keys: tasks, float_baseline")
    assert "pronoun_template (occupation_pronouns)" in message and "stereoset_split (stereoset)" in message


def test_a_task_declares_the_kind_of_its_records_and_gets_its_statistics():
    """A plugin task with a record shape of its own declares its ItemKind: summary, paired statistics,
    headline and direction come from it; a kind of the wrong type is refused when registered."""
    import numpy as np

    from fairgptq.analysis.comparison import compare_items
    from fairgptq.core.errors import PluginError
    from fairgptq.contract.kinds import ItemKind
    from fairgptq.evaluation.report import headline_metrics, ideal_value, is_bias_metric
    from fairgptq.contract.hooks import hookimpl
    from fairgptq.registry import Registry

    def summarize(items):
        return {"n": len(items), "pct_flagged": 100.0 * sum(it["flagged"] for it in items) / len(items)}

    kind = ItemKind("flags", frozenset({"flagged", "score"}), summarize,
                    lambda items: {"pct_flagged": lambda w, f=np.array([float(i["flagged"]) for i in items]):
                                   100.0 * (w @ f) / w.sum(1)},
                    headline=("pct_flagged",), ideal={"pct_flagged": 0.0}, bias=frozenset({"pct_flagged"}))
    task = EvaluationTask("flag_task", "flags", lambda *a: {}, needs_data=False, kind=kind)

    class Plugin:
        @hookimpl
        def fairgptq_evaluation_tasks(self):
            return {"flag_task": task}

    registry = Registry(entry_points=False)
    registry.register(Plugin(), name="flags")
    from fairgptq.registry import default_registry
    default_registry().register(Plugin(), name="flags_default")
    try:
        a = [{"id": str(i), "flagged": int(i % 3 == 0), "score": 1.0} for i in range(30)]
        b = [{"id": str(i), "flagged": int(i % 2 == 0), "score": 1.0} for i in range(30)]
        rows = compare_items("flag_task", a, b, n_boot=200)
        # a kind with an ideal gets the score's distance from it without declaring it (here ideal 0: the share)
        assert [r["metric"] for r in rows] == ["pct_flagged", "pct_flagged_from_parity"]
        assert rows[0]["diff"] == pytest.approx(50 / 3 * 1.0, rel=1e-9)
        assert headline_metrics({"tasks": {"flag_task": {"pct_flagged": 20.0, "n": 30}}}) == {
            "flag_task.pct_flagged": 20.0, "flag_task.pct_flagged_from_parity": 20.0}
        assert ideal_value("flag_task.pct_flagged") == 0.0 and is_bias_metric("flag_task.pct_flagged")
    finally:
        default_registry().unregister("flags_default")

    from fairgptq.evaluation.task_registry import registered_tasks

    def plugin(kind):
        class Named:
            @hookimpl
            def fairgptq_evaluation_tasks(self):
                return {"named": EvaluationTask("named", "named", lambda *a: {}, needs_data=False, kind=kind)}
        return Named()

    # a kind named by a string is the registered kind of that name (an outside task needs no import of it)
    registry.register(plugin("preference"), name="named")
    assert registered_tasks(registry)["named"].kind.name == "preference"
    registry.unregister("named")
    registry.register(plugin("no_such_kind"), name="named")
    with pytest.raises(PluginError, match="no registered task declares the kind 'no_such_kind'"):
        registered_tasks(registry)
    registry.unregister("named")
    registry.register(plugin(42), name="named")
    with pytest.raises(PluginError, match="ItemKind"):
        registered_tasks(registry)
