"""The memory check (issue 26, finding 4): a run whose calibration cannot fit is refused before loading.

The estimate itself is calibrated against measured peak RSS in benchmarks/bench_memory.py (on the tiny
model and SmolLM2); here: the refusal and its message, the validate/run split, and the arithmetic.
"""
from __future__ import annotations

from types import SimpleNamespace

import psutil

from fairgptq.pipeline.memory_check import ModelShape, calibration_bytes, shape_of
from fairgptq.pipeline.preflight import memory_problems
from fairgptq.pipeline.loading import validate

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file


def test_the_estimate_counts_every_token_and_the_model(tmp_path):
    shape = shape_of(str(save_tiny_llama(tmp_path / "m", layers=6)))
    assert shape == ModelShape(hidden=64, intermediate=128, vocab=33, layers=6, tied=True)
    one, two = calibration_bytes(shape, 1000), calibration_bytes(shape, 2000)
    assert two - one == 1000 * 4 * (20 * 64 + 2 * 128)  # linear in the tokens
    assert shape.weight_bytes() > 0


def test_a_calibration_that_cannot_fit_is_refused_with_the_fix(tmp_path, monkeypatch):
    GiB = 2**30
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=24 * GiB, available=10 * GiB))
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "m", layers=6), write_pair_file(tmp_path / "p.jsonl"))
    shape = shape_of(str(tmp_path / "m"))
    for n, refused_at_run, refused_at_validate in ((1000, False, False), (6000, True, False), (16000, True, True)):
        raw["calibration"]["text"] = {"n": n, "seqlen": 512, "path": str(tmp_path / "p.jsonl")}
        spec = validate(raw, "x.yaml", environment=False)
        need = calibration_bytes(shape, n * 512)
        assert (need > 10 * GiB) == refused_at_run and (need > 24 * GiB) == refused_at_validate  # the cases hold
        at_run = dict(memory_problems(spec, against="available"))
        assert bool(at_run) == refused_at_run
        if at_run:
            assert "model.onload: always" in at_run["calibration.text"] and "GiB" in at_run["calibration.text"]
        assert bool(memory_problems(spec, against="total")) == refused_at_validate
    spec.model.onload = "always"  # activations spill to disk there: no refusal
    assert memory_problems(spec, against="available") == []


def test_the_check_sizes_the_pairs_used_not_those_requested(tmp_path, monkeypatch):
    # issue 35: n 1e9 of a file of 8 pairs was refused for 14.7 GiB: the check sized 10 000 requested pairs
    from fairgptq.registry import default_registry
    GiB = 2**30
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=24 * GiB, available=10 * GiB))
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "m", layers=6), write_pair_file(tmp_path / "p.jsonl"))
    raw["calibration"]["pairs"]["mine"]["n"] = 10**9
    raw["calibration"]["max_length"] = 2000
    spec = validate(raw, "x.yaml", environment=False)
    assert memory_problems(spec, against="available")  # sized as requested (capped): 2e10 tokens do not fit
    assert memory_problems(spec, against="available", registry=default_registry()) == []  # 8 pairs are used


def test_validate_says_when_run_would_refuse_for_the_memory_free_now(tmp_path, monkeypatch, caplog):
    # issue 35: validate passed what run then refused for the memory free at that moment, without a word
    GiB = 2**30
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=24 * GiB, available=10 * GiB))
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "m", layers=6), write_pair_file(tmp_path / "p.jsonl"))
    raw["calibration"]["text"] = {"n": 6000, "seqlen": 512, "path": str(tmp_path / "p.jsonl")}
    spec = validate(raw, "x.yaml", environment=False)
    with caplog.at_level("WARNING", logger="fairgptq"):
        assert memory_problems(spec, against="total") == []  # fits the machine: valid
    assert "will be refused at run time unless memory frees up" in caplog.text and "10.0 GiB is free now" in caplog.text
    assert memory_problems(spec, against="available")  # and run refuses it, as said
