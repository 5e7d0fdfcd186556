"""The three-way benchmark (benchmarks/bench_three_way.py) runs end to end: its fairgptq rows on a tiny model.

The benchmark is a script, not part of the suite (a full run takes hours), so nothing else imports it:
an import it makes only inside ``main`` went stale once (``fairgptq.core.model_loading`` after the model
aliases left the core) and surfaced only when a measurement started.  The peers' rows need GPTQModel and
llm-compressor's own venv and minutes each; the fairgptq rows exercise the script's loading, calibration,
scoring, resume and output paths in seconds.
"""
from __future__ import annotations

import json

import pytest

from tiny_model import save_tiny_llama
from script_loading import load_script


def _bench():
    return load_script("benchmarks/bench_three_way.py")


def test_the_fairgptq_rows_run_score_and_resume(tmp_path, real_data_dir, one_thread):
    bench = _bench()
    model = save_tiny_llama(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["--model", str(model), "--draws", "1", "--rows", "4bit-none-fairgptq,4bit-default-fairgptq",
            "--windows", "4", "--seqlen", "32", "--ppl-tokens", "64", "--crows-limit", "8", "--threads", "1",
            "--out", str(out)]
    assert bench.main(argv) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == ["4bit-none-fairgptq", "4bit-default-fairgptq"]
    assert all(r["seconds"] > 0 and r["ppl"] > 1 and r["crows_n"] == 8 for r in records)
    assert records[1]["resolved"]["act_order"] and not records[0]["resolved"]["act_order"]
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"4bit-none-fairgptq", "4bit-default-fairgptq"}
    assert "| 4bit-default-fairgptq | fairgptq | 4 |" in (out / "table.md").read_text()
    assert bench.main(argv) == 0  # a rerun resumes: nothing is quantized again
    assert len((out / "records.jsonl").read_text().splitlines()) == 2


def test_an_unknown_row_is_named_with_the_choices(tmp_path, capsys):
    assert _bench().main(["--rows", "4bit-nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "4bit-nope" in err and "4bit-default-fairgptq" in err
