"""Issue 35: settings that are numbers only when they are numbers, and messages that reach the user.

``target: true`` used to become target 1.0 and ``lambda: .inf`` to validate; ``eval --tasks ''`` ran every
default task; ``--reuse`` said nothing when no point matched (tests/test_pipeline_sweep.py checks the
count); "N of M pairs contribute nothing" reached only run.log; a data file's bad rows were warned about
once per sweep point.
"""
from __future__ import annotations

import json
import logging

import pytest

from fairgptq import cli
from fairgptq.datasets_adapters.pair_files import load_pair_file

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("settings")
    raw = tiny_pipeline(save_tiny_llama(d / "tiny"), write_pair_file(d / "p.jsonl"), export={"enabled": False})
    text = d / "t.txt"
    text.write_text("the doctor said the nurse was kind " * 40)
    raw["calibration"]["text"] = {"path": str(text), "n": 2, "seqlen": 16}
    return d, raw


def _likelihood(raw: dict, params: dict) -> dict:
    return {**raw, "objectives": [{"name": "likelihood_pairs", "pairs": "mine", "params": params}]}


@pytest.mark.parametrize("params, said", [
    ({"target": True}, "target: True is true/false, not a number"),
    ({"lambda": float("inf")}, "finite number"),
    ({"lambda": float("nan")}, "finite number"),
    ({"target": float("nan")}, "finite number"),
])
def test_likelihood_settings_refuse_bools_and_non_finite_numbers(base, params, said, capsys):
    d, raw = base
    path = write_yaml(d / "l.yaml", _likelihood(raw, params))
    assert cli.main(["validate", str(path)]) == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("override", ["objectives[0].params.alpha=true", "quantization.damp=true",
                                      "quantization.damp=.inf", "objectives[0].params.alpha=.nan",
                                      "calibration.text.n=true", "objectives[0].params.alpha={attn_out: true}"])
def test_no_setting_of_the_schema_takes_a_bool_or_a_non_finite_number(base, override, capsys):
    d, raw = base
    path = write_yaml(d / "f.yaml", raw)
    assert cli.main(["validate", str(path), "--set", override]) == 2, override
    assert "error" in capsys.readouterr().err


def test_lambda_with_the_hessian_metric_validates_and_runs(base, tmp_path, capsys):
    d, raw = base
    path = write_yaml(d / "h.yaml", _likelihood(raw, {"lambda": 1e-6, "metric": "hessian"}))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["objectives"][0]["lambda_by_module"].values()) == {1e-6}


def test_eval_refuses_an_empty_task_list(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path / "no-model"), "--tasks", ""]) == 2
    assert "--tasks '' names no task" in capsys.readouterr().err
    assert cli.main(["audit", "a", "b", "--tasks", " , "]) == 2


def test_pairs_that_contribute_nothing_are_said_on_the_console(base, tmp_path, capsys):
    d, raw = base
    pairs = d / "late.jsonl"
    rows = [("the man was a good kind strong smart doctor", "the man was a good kind strong smart nurse"),
            ("he is a nurse", "she is a nurse")]
    pairs.write_text("".join(json.dumps({"stereo": s, "anti": a, "category": "gender"}) + "\n" for s, a in rows))
    raw = {**raw, "calibration": {**raw["calibration"], "max_length": 6,
                                  "pairs": {"mine": {"source": "pair_file",
                                                     "params": {"path": str(pairs), "category_col": "category"}}}}}
    assert cli.main(["run", str(write_yaml(d / "late.yaml", raw)), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "1 of 2 pairs differ only after the first 6 tokens and contribute nothing" in err
    assert err.count("contribute nothing") == 1
    assert "contribute nothing" in (tmp_path / "run" / "run.log").read_text()


def test_a_files_bad_rows_are_warned_about_once_per_process(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"stereo": "He is a nurse.", "anti": "She is a nurse.", "category": "g"}) + "\n"
                    + json.dumps({"stereo": "same", "anti": "same", "category": "g"}) + "\n")
    with caplog.at_level(logging.INFO, logger="fairgptq"):
        for _ in range(3):  # a sweep's points and its float baseline read the same file
            assert len(load_pair_file(path, category_col="category")) == 1
    said = [r for r in caplog.records if "bad row" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.INFO, logging.INFO]


def test_an_objective_factory_returning_the_wrong_type_is_named(base, tmp_path, monkeypatch, capsys):
    # it used to stop deep in quantization with AttributeError: 'Odd' object has no attribute 'streams' (exit 1)
    (tmp_path / "odd_objective.py").write_text(
        "from fairgptq.contract import hookimpl\n\n"
        "class Odd:\n    pass\n\n"
        "def make(pairs=None, pair_set=None, batch_size=None, max_length=None, alpha: float = 0.1):\n"
        "    return Odd()\n\n"
        "@hookimpl\ndef fairgptq_objectives():\n    return {'odd': make}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    d, raw = base
    raw = {**raw, "plugins": ["odd_objective"],
           "objectives": [{"name": "odd", "pairs": "mine", "params": {"alpha": 0.2}}]}
    assert cli.main(["run", str(write_yaml(tmp_path / "odd.yaml", raw)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "objective 'odd' (module odd_objective): its factory returned Odd, not a fairgptq Objective" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name, value", [("holdout_fraction", True), ("holdout_fraction", float("nan")),
                                         ("holdout_fraction", 0.2)])
def test_task_options_refuse_bools_and_non_finite_numbers(name, value):
    from pydantic import ValidationError
    from fairgptq.evaluation.task_registry import options_for, registered_tasks
    task = registered_tasks()["stereoset"]
    if value == 0.2:
        assert getattr(options_for(task, {name: value}), name) == 0.2
        return
    with pytest.raises(ValidationError):
        options_for(task, {name: value})
