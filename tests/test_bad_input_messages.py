"""Issue 26, findings 7-9: each bad input ends in one line and exit 2, naming the file, plugin or setting.

(7) tracebacks and exit 1 where exit 2 belongs; (8) settings silently accepted; (9) a bad-row warning
repeated per point, and an unset FAIRGPTQ_DATA_DIR reported as a missing file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fairgptq import cli

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    return d, tiny_pipeline(save_tiny_llama(d / "m"), write_pair_file(d / "p.jsonl"))


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "fairgptq failed" not in text, text
    return rc, text


def _validate(capsys, d: Path, raw: dict, name: str = "t") -> tuple[int, str]:
    return _cli(capsys, "validate", write_yaml(d / f"{name}.yaml", raw))


def test_a_nul_byte_in_the_yaml(base, capsys):
    d, _ = base
    (d / "nul.yaml").write_text("name: x\x00\n")
    rc, text = _cli(capsys, "validate", d / "nul.yaml")
    assert rc == 2 and "not valid YAML" in text and "#x0000" in text


def test_a_name_too_long_for_the_file_system(base, capsys):
    d, raw = base
    rc, text = _validate(capsys, d, {**raw, "output": str(d / ("a" * 300))})
    assert rc == 2 and "too long" in text
    rc, text = _cli(capsys, "run", write_yaml(d / "t.yaml", raw), "--out", d / ("b" * 300))
    assert rc == 2 and "too long" in text


@pytest.mark.parametrize("setting, expect", [
    ({"backend": {"name": "cpu", "params": {"threads": 1_000_000_000}}}, "threads=1000000000"),
    ({"model": {"max_memory": 0}}, "max_memory"),
    ({"model": {"max_memory": -5}}, "max_memory"),
    ({"plugins": ["os"]}, "registers nothing"),
], ids=["threads", "max-memory-0", "max-memory-negative", "plugins-os"])
def test_settings_that_were_silently_accepted(base, capsys, setting, expect):
    d, raw = base
    changed = json.loads(json.dumps(raw))
    for key, value in setting.items():
        changed[key] = {**changed.get(key, {}), **value} if isinstance(value, dict) else value
    rc, text = _validate(capsys, d, changed)
    assert rc == 2 and expect in text


def test_more_pairs_asked_for_than_the_set_holds_is_said(base, capsys, caplog):
    """Not silently: the warning names the setting and what the set holds (taking all is a pipeline's choice:
    research/pair_source.yaml asks 256 of the 24 template pairs), and the run's record keeps both numbers."""
    from fairgptq.pipeline import build
    from fairgptq.pipeline.loading import validate
    from fairgptq.registry import default_registry
    d, raw = base
    changed = json.loads(json.dumps(raw))
    changed["calibration"]["pairs"]["mine"]["n"] = 1_000_000_000
    with caplog.at_level(logging.WARNING, logger="fairgptq"):
        rc, _ = _validate(capsys, d, changed)
    assert rc == 0 and any("calibration.pairs.mine.n" in r.getMessage() and "holds 8" in r.getMessage()
                           for r in caplog.records)
    info = build.pair_sets(validate(changed, "x.yaml", environment=False), default_registry())["mine"].info
    assert (info["n"], info["n_requested"]) == (8, 1_000_000_000)


def test_a_plugin_returning_the_wrong_type_is_named(base, capsys, tmp_path, monkeypatch):
    d, raw = base
    (tmp_path / "liar.py").write_text(
        "from fairgptq.contract.hooks import hookimpl\n"
        "def make(**kw):\n    return 'not a backend'\n"
        "@hookimpl\ndef fairgptq_backends():\n    return {'liar': make}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, text = _validate(capsys, d, {**raw, "plugins": ["liar"], "backend": {"name": "liar"}})
    assert rc == 2 and "'liar'" in text and "not a fairgptq Backend" in text
    from fairgptq.registry import default_registry
    assert not default_registry().pm.has_plugin("liar")  # the pipeline's plugin stayed in its own registry


def test_a_model_folder_beside_the_cwd_but_not_the_pipeline(base, capsys, tmp_path, monkeypatch):
    d, raw = base
    monkeypatch.chdir(d)  # ./m exists here, not beside the pipeline in tmp_path
    rc, text = _validate(capsys, tmp_path, {**raw, "model": {"name": "m"}})
    assert rc == 2 and "beside the pipeline" in text


def test_an_unset_data_variable_is_named(base, capsys, monkeypatch):
    d, raw = base
    monkeypatch.delenv("FAIRGPTQ_DATA_DIR_UNSET_FOR_TEST", raising=False)
    changed = json.loads(json.dumps(raw))
    changed["calibration"]["pairs"]["mine"]["params"]["path"] = "$FAIRGPTQ_DATA_DIR_UNSET_FOR_TEST/p.jsonl"
    rc, text = _validate(capsys, d, changed)
    assert rc == 2 and "FAIRGPTQ_DATA_DIR_UNSET_FOR_TEST is not set" in text


def test_a_bad_row_file_is_read_and_reported_once(base, capsys, caplog, tmp_path):
    d, raw = base
    pairs = tmp_path / "bad.jsonl"
    good = (d / "p.jsonl").read_text()
    pairs.write_text(good + json.dumps({"stereo": "same", "anti": "same", "category": "x"}) + "\n")
    changed = json.loads(json.dumps(raw))
    changed["calibration"]["pairs"]["mine"]["params"]["path"] = str(pairs)
    changed["sweep"] = {"grid": {"objectives[0].params.alpha": [0.0, 0.1, 0.2, 0.3]}}
    with caplog.at_level(logging.WARNING, logger="fairgptq"):
        rc, _ = _validate(capsys, d, changed)
    assert rc == 0
    assert sum("bad row" in r.getMessage() for r in caplog.records) == 1


def test_compare_refuses_items_holding_nan_and_an_existing_output(base, capsys, tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    for run, value in ((run_a, -1.0), (run_b, float("nan"))):
        (run / "items").mkdir(parents=True)
        (run / "items" / "crows_pairs.jsonl").write_text("".join(
            json.dumps({"id": str(i), "bias_type": "gender", "more": value, "less": -2.0, "choice": 1}) + "\n"
            for i in range(4)))
    rc, text = _cli(capsys, "compare", run_b, "--baseline", run_a)
    assert rc == 2 and "non-finite" in text
    (tmp_path / "out.txt").write_text("mine")
    rc, text = _cli(capsys, "compare", run_a, "--baseline", run_b, "--out", tmp_path / "out.txt")
    assert rc == 2 and "is not a folder" in text and (tmp_path / "out.txt").read_text() == "mine"
