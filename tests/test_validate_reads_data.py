"""``fairgptq validate`` reads what a run would read and refuses what a run would refuse (issue 26, finding 6).

Each evaluation data file is read by its task's own reader, the calibration text is read, and the output
folder is checked as ``run`` checks it, so these fail in validate instead of after quantizing.
"""
from __future__ import annotations

import os

import pytest

from fairgptq import cli

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


@pytest.fixture(scope="module")
def base(tmp_path_factory, real_data_dir):
    d = tmp_path_factory.mktemp("validate")
    return d, tiny_pipeline(save_tiny_llama(d / "m"), write_pair_file(d / "p.jsonl"))


def _validate(capsys, d, raw, *extra) -> tuple[int, str]:
    rc = cli.main(["validate", str(write_yaml(d / "t.yaml", raw)), *extra])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.out + out.err


def _with_data(raw, task, path):
    return {**raw, "evaluation": {"tasks": [task], "paths": {task: str(path)}}}


def test_bad_evaluation_files_are_refused_by_validate(base, capsys, tmp_path):
    d, raw = base
    header_only = tmp_path / "crows.csv"
    header_only.write_text(",sent_more,sent_less,stereo_antistereo,bias_type\n")
    empty = tmp_path / "wiki.txt"
    empty.write_text("\n \n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café société\n".encode("latin-1") * 50)
    cases = [(("crows_pairs", header_only), "no pairs"), (("wikitext2", empty), "no items"),
             (("crows_pairs", tmp_path), "is a folder"), (("wikitext2", latin), "not UTF-8")]
    for (task, path), expect in cases:
        rc, text = _validate(capsys, d, _with_data(raw, task, path))
        assert rc == 2 and expect in text and str(path) in text, (task, path, text)


def test_bad_calibration_text_is_refused_by_validate(base, capsys, tmp_path):
    d, raw = base
    latin = tmp_path / "calib.txt"
    latin.write_bytes("é".encode("latin-1") * 100)
    rc, text = _validate(capsys, d, {**raw, "calibration": {**raw["calibration"], "text": {"n": 4, "seqlen": 8,
                                                                                           "path": str(latin)}}})
    assert rc == 2 and "calibration.text" in text and "UTF-8" in text


def test_an_output_every_run_refuses_is_refused_by_validate(base, capsys, tmp_path, monkeypatch):
    d, raw = base
    monkeypatch.chdir(tmp_path)
    rc, text = _validate(capsys, d, {**raw, "output": "."})
    assert rc == 2 and "working directory" in text
    mine = tmp_path / "my_documents"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    rc, text = _validate(capsys, d, {**raw, "output": str(mine)})
    assert rc == 2 and "not written by fairgptq" in text
    assert os.listdir(mine) == ["thesis.tex"]
