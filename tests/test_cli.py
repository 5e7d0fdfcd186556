"""The fairgptq command: exit codes (0 ok, 2 bad input, 1 failure) and one clear message for bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fairgptq import cli

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    raw = tiny_pipeline(save_tiny_llama(d / "model"), write_pair_file(d / "pairs.jsonl"))
    good = write_yaml(d / "good.yaml", raw)
    bad = write_yaml(d / "bad.yaml", dict(raw, objectives=[{"pairs": "mine", "params": {"alpha": -1}}]))
    return d, good, bad


def test_validate_ok_and_bad(files, capsys):
    _, good, bad = files
    assert cli.main(["validate", str(good)]) == 0
    assert "is valid" in capsys.readouterr().out
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "objectives[0].params.alpha: must be >= 0" in err and "Traceback" not in err


def test_run_refuses_to_overwrite_then_force(files, capsys):
    d, good, _ = files
    out = d / "run"
    assert cli.main(["run", str(good), "--out", str(out), "--set", "export.verify=false"]) == 0
    text = capsys.readouterr().out
    assert "Report:" in text and "report.md" in text
    assert cli.main(["run", str(good), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["run", str(good), "--out", str(out), "--force", "--set", "export.enabled=false"]) == 0
    assert not (out / "model").exists()


def test_bad_override_is_bad_input(files, capsys):
    _, good, _ = files
    assert cli.main(["run", str(good), "--set", "quantization.bits"]) == 2
    assert "key.path=value" in capsys.readouterr().err


def test_unexpected_failure_exits_1(files, monkeypatch, capsys):
    d, good, _ = files
    import fairgptq.pipeline.runner as runner

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "execute", boom)
    assert cli.main(["run", str(good), "--out", str(d / "failed")]) == 1
    assert "disk on fire" in capsys.readouterr().err
    assert not (d / "failed").exists()


def test_plugins_table(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    for word in ("pair_sources", "stereoset", "objectives", "fair_pairs", "backends", "cpu", "built-in"):
        assert word in out


def test_eval_exported_checkpoint(files, real_data_dir, capsys):
    d, good, _ = files
    out = d / "for-eval"
    assert cli.main(["run", str(good), "--out", str(out)]) == 0
    capsys.readouterr()
    js = d / "eval.json"
    assert cli.main(["eval", str(out / "model"), "--tasks", "crows_pairs", "--limit", "4", "--out", str(js)]) == 0
    assert "pct_stereotype" in capsys.readouterr().out
    assert json.loads(js.read_text())["tasks"]["crows_pairs"]["n"] == 4
    assert cli.main(["eval", str(out / "model"), "--tasks", "crows"]) == 2


def test_console_script_exit_code(files):
    _, _, bad = files
    proc = subprocess.run([sys.executable, "-m", "fairgptq.cli", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "objectives[0].params.alpha" in proc.stderr and "Traceback" not in proc.stderr
