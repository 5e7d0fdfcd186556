"""Issue 35: a run's files share one mode policy, and salvaged copies can be listed and removed.

Under umask 077 the weights were 0600 while README.md, results.json, report.md and config.yaml were
0644; every interrupted ``--force`` run kept another ``<name>.unevaluated-N`` with nothing to list or
clean them.
"""
from __future__ import annotations

import os

import pytest

from fairgptq import cli
from fairgptq.pipeline.rundir import COMPLETE, MARKER, atomic_run_dir, is_complete

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


def test_every_file_of_a_run_gets_the_umasks_mode(tmp_path):
    pipeline = write_yaml(tmp_path / "t.yaml", tiny_pipeline(save_tiny_llama(tmp_path / "tiny"),
                                                             write_pair_file(tmp_path / "p.jsonl")))
    old = os.umask(0o077)
    try:
        assert cli.main(["run", str(pipeline), "--out", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    run = tmp_path / "run"
    modes = {str(f.relative_to(run)): f.stat().st_mode & 0o777 for f in run.rglob("*") if f.is_file()}
    for name in ("results.json", "report.md", "config.yaml", "model/model.safetensors", "model/README.md",
                 "model/config.json", "model/quantize_config.json"):
        assert modes[name] == 0o600, (name, modes)
    assert set(modes.values()) == {0o600}, modes


class Interrupted(Exception):
    pass


def _salvaged_run(final):
    """A run that exported its model and then failed: fairgptq keeps it as <final>.unevaluated[-N]."""
    with pytest.raises(Interrupted):
        with atomic_run_dir(final) as tmp:
            (tmp / "model").mkdir()
            (tmp / "model" / "quantize_config.json").write_text("{}")
            (tmp / "model" / "model.safetensors").write_bytes(b"0" * 2**20)
            raise Interrupted


def test_runs_clean_lists_salvaged_copies_and_removes_them_only_on_request(tmp_path, capsys):
    runs = tmp_path / "runs"
    for _ in range(2):
        _salvaged_run(runs / "mine")
    _salvaged_run(runs / "sweep" / "points" / "000_alpha=0.1")
    with atomic_run_dir(runs / "mine") as tmp:  # the run that finally completed
        (tmp / "config.yaml").write_text("name: mine\n")
    users = runs / "notes.unevaluated"  # a folder of the user's that only shares the name
    users.mkdir()
    (users / "todo.txt").write_text("mine")
    copies = [runs / "mine.unevaluated", runs / "mine.unevaluated-2", runs / "sweep" / "points" /
              "000_alpha=0.1.unevaluated"]
    assert all(c.is_dir() and (c / MARKER).is_file() and not (c / COMPLETE).exists() for c in copies)

    assert cli.main(["runs", "clean", str(runs)]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert all(str(c) in out for c in copies) and "3 salvaged copies" in out and "--yes" in out
    assert str(users) not in out and f"{runs / 'mine'} " not in out
    assert all(c.is_dir() for c in copies)  # listing removes nothing

    assert cli.main(["runs", "clean", str(runs), "--yes"]) == 0
    assert not any(c.exists() for c in copies)
    assert is_complete(runs / "mine") and (users / "todo.txt").read_text() == "mine"
    assert cli.main(["runs", "clean", str(runs)]) == 0
    assert "no salvaged copies" in capsys.readouterr().out
    assert cli.main(["runs", "clean", str(tmp_path / "nowhere")]) == 2
