"""Issue 13, one test per finding: nothing lost, nothing silently ignored.

Findings: (1) --force deleting any folder; (2) two runs on one --out; (3) an interrupt during a
--force replacement; (4) a late failure losing the quantized model; (5) settings silently
ignored; (6) tracebacks instead of messages; (7) tampered checkpoints; (8) resources.
Concurrency and interrupts are driven by real subprocesses and signals.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from fairgptq import cli
from fairgptq.core.errors import ConfigError
from fairgptq.export import fairgptq_record, load_gptq_checkpoint
from fairgptq.export.integrity import CheckpointIntegrityError
from fairgptq.pipeline import load_pipeline, rundir
from fairgptq.pipeline.locking import run_lock
from fairgptq.pipeline.rundir import COMPLETE, MARKER, RunDirError, atomic_run_dir, is_complete
from fairgptq.pipeline.runner import run_pipeline

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    """A project folder: tiny model, pair file and a pipeline whose paths are relative to it."""
    d = tmp_path_factory.mktemp("proj")
    save_tiny_llama(d / "tiny")
    write_pair_file(d / "p.jsonl")
    raw = tiny_pipeline(Path("tiny"), Path("p.jsonl"))
    raw["model"]["name"] = "./tiny"
    write_yaml(d / "t.yaml", raw)
    return d


@pytest.fixture(scope="module")
def finished(proj, tmp_path_factory):
    """A complete run (exported model) to replace, tamper with and evaluate."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["run", str(proj / "t.yaml"), "--out", str(out)]) == 0
    return out


def _cli(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return rc, text


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


# (1) --force deletes only what fairgptq wrote ---------------------------------------------------

def test_force_never_deletes_the_working_directory_or_the_pipelines_folder(proj, capsys, monkeypatch):
    (proj / "notes.txt").write_text("mine")
    monkeypatch.chdir(proj)
    before = sorted(p.name for p in proj.iterdir())
    for out in (".", "..", str(proj)):
        rc, text = _cli(capsys, "run", "t.yaml", "--out", out, "--force")
        assert rc == 2 and ("working directory" in text or "holds the pipeline" in text)
    assert sorted(p.name for p in proj.iterdir()) == before and (proj / "notes.txt").read_text() == "mine"


def test_force_never_deletes_a_folder_fairgptq_did_not_write(proj, tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", other, "--force")
    assert rc == 2 and "not written by fairgptq" in text and str(other) in text
    assert (other / "thesis.tex").read_text() == "years of work"


def test_force_replaces_a_fairgptq_run(proj, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    rc, _ = _cli(capsys, "run", proj / "t.yaml", "--out", out, "--force", "--set", "objectives[0].params.alpha=0.3")
    assert rc == 0 and is_complete(out) and (out / MARKER).is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["objectives"][0]["params"]["alpha"] == 0.3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.") and p.is_dir()]


def test_failing_forced_sweep_keeps_the_old_points(proj, tmp_path, monkeypatch):
    raw = yaml.safe_load((proj / "t.yaml").read_text())
    raw.update(export={"enabled": False}, sweep={"grid": {"objectives[0].params.alpha": [0.0, 0.2]}})
    sweep_file = write_yaml(proj / "sweep.yaml", raw)
    out = tmp_path / "sweep"
    run_pipeline(load_pipeline(sweep_file), out)
    old = {p: (out / "points" / p / "results.json").read_text() for p in ("000_alpha=0.0", "001_alpha=0.2")}
    old_written = (out / "points" / "000_alpha=0.0" / "results.json").stat().st_mtime_ns

    from fairgptq.pipeline import runner
    real, calls = runner.execute, []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*a, **k)

    monkeypatch.setattr(runner, "execute", second_fails)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_pipeline(load_pipeline(sweep_file), out, force=True)
    assert (out / "points" / "001_alpha=0.2" / "results.json").read_text() == old["001_alpha=0.2"]
    # the first point was run again: a tiny model reproduces its results byte for byte, so compare write times
    assert (out / "points" / "000_alpha=0.0" / "results.json").stat().st_mtime_ns > old_written
    assert not is_complete(out)


# (2) one writer per run directory ---------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from fairgptq.pipeline.locking import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(3600)  # until the test kills it
"""


def test_second_run_on_the_same_out_stops_naming_the_holder_and_spares_its_partial(proj, tmp_path):
    out = tmp_path / "c"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True,
                              env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        partial = tmp_path / f".c.partial-{holder.pid}"
        partial.mkdir()
        (partial / "run.log").write_text("in progress")
        second = subprocess.run([sys.executable, "-m", "fairgptq.cli", "run", str(proj / "t.yaml"), "--out", str(out),
                                 "--set", "objectives[0].params.alpha=0"], capture_output=True, text=True, env=ENV)
        assert second.returncode == 2, second.stderr
        assert f"pid {holder.pid}" in second.stderr and "Traceback" not in second.stderr
        assert (partial / "run.log").read_text() == "in progress" and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it, and the next run cleans its partial up
    with atomic_run_dir(out):
        pass
    assert is_complete(out) and not partial.exists()


def test_two_real_runs_on_one_out_do_not_lose_a_result(proj, tmp_path):
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "fairgptq.cli", "run", str(proj / "t.yaml"), "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 60
    while not (tmp_path / ".c.lock").is_file() or not (tmp_path / ".c.lock").read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(cmd + ["--set", "objectives[0].params.alpha=0"], capture_output=True, text=True, env=ENV)
    assert first.wait() == 0
    assert second.returncode == 2 and "being written by another fairgptq run" in second.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["objectives"][0]["params"]["alpha"] == 0.1


# (3) interrupts during --force ------------------------------------------------------------------

def _default_sigint() -> None:
    """A child of a background job inherits SIGINT ignored; a user's Ctrl-C is what is simulated here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SLOW_RUN = """
import sys, time
from fairgptq import cli
from fairgptq.pipeline import runner
real = runner.execute
def slow(*a, **k):
    out = real(*a, **k)
    print("executed", flush=True)
    time.sleep(3600)  # until the test's signal
    return out
runner.execute = slow
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_forced_replacement_keeps_the_old_run(proj, finished, tmp_path, sig):
    out = _copy(finished, tmp_path / "run")
    before = (out / "results.json").read_text()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, "run", str(proj / "t.yaml"), "--out", str(out), "--force",
                             "--set", "objectives[0].params.alpha=0.4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, preexec_fn=_default_sigint)
    while "executed" not in proc.stdout.readline():
        assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)  # unwinding is quick; a loaded CI machine is not
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr
    assert rc == (130 if sig != signal.SIGKILL else -9)
    assert is_complete(out) and (out / "results.json").read_text() == before
    assert fairgptq_record(load_gptq_checkpoint(out / "model")[2])["objectives"][0]["alpha"] == 0.1
    kept = tmp_path / "run.unevaluated"
    if sig != signal.SIGKILL:  # the new run's exported model is kept, visibly, and the message says where
        assert kept.is_dir() and not is_complete(kept) and "run.unevaluated" in stderr
    # a re-run without --force still sees the old complete run; the dead run's partial is kept or cleaned
    with pytest.raises(RunDirError, match="a complete run"):
        with atomic_run_dir(out):
            pass
    assert kept.is_dir() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_interrupt_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    """Where the atomic exchange is unavailable, a kill between the renames leaves old + new aside."""
    final = tmp_path / "run"
    with atomic_run_dir(final) as tmp:
        (tmp / "v").write_text("old")
    monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    real_rename, renames = os.rename, []

    def killed_after_first(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after this runs
        real_rename(src, dst)

    monkeypatch.setattr(rundir.os, "rename", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        with atomic_run_dir(final, force=True) as tmp:
            (tmp / "v").write_text("new")
    monkeypatch.setattr(rundir.os, "rename", real_rename)
    assert not final.exists()  # the window: old moved aside, new not yet in place
    with pytest.raises(RunDirError, match="a complete run"):
        with atomic_run_dir(final):
            pass
    assert (final / "v").read_text() == "new" and is_complete(final)


# (4) the quantized model survives a late failure -------------------------------------------------

def test_evaluation_failure_keeps_the_exported_model_and_eval_finishes_the_job(proj, tmp_path, monkeypatch, capsys,
                                                                               real_data_dir):
    import fairgptq.evaluation as evaluation

    def broken(*a, **k):
        raise OSError(28, "No space left on device", "somewhere")

    monkeypatch.setattr(evaluation, "evaluate", broken)
    out = tmp_path / "run"
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", out, "--set", "evaluation.tasks=[crows_pairs]",
                    "--set", "evaluation.limit=4")
    kept = tmp_path / "run.unevaluated"
    assert rc == 1 and "No space left on device" in text and "fairgptq eval" in text and str(kept) in text
    assert not out.exists() and (kept / "model" / "quantize_config.json").is_file()
    monkeypatch.undo()
    rc, text = _cli(capsys, "eval", kept / "model", "--tasks", "crows_pairs", "--limit", "4",
                    "--out", kept / "evaluation.json")
    assert rc == 0 and json.loads((kept / "evaluation.json").read_text())["tasks"]["crows_pairs"]["n"] == 4


def test_validate_checks_evaluation_files_and_overlap_naming_real_keys(proj, tmp_path, capsys, monkeypatch,
                                                                      real_data_dir):
    monkeypatch.setenv("FAIRGPTQ_DATA_DIR", str(tmp_path))  # no WikiText-2 there
    rc, text = _cli(capsys, "validate", proj / "t.yaml", "--set", "evaluation.tasks=[crows_pairs, wikitext2]",
                    "--set", f"evaluation.paths={{crows_pairs: {real_data_dir}/crows_pairs/crows_pairs_anonymized.csv}}")
    assert rc == 2 and "wikitext2 data not found" in text and "crows" not in text
    monkeypatch.undo()
    rc, text = _cli(capsys, "validate", proj / "t.yaml", "--set", "evaluation.tasks=[stereoset]",
                    "--set", "evaluation.stereoset_split=all", "--set", "calibration.pairs.mine={source: stereoset, n: 64}")
    assert rc == 2 and "calibration.pairs.mine.split: calibration" in text and "on_overlap" not in text
    rc, _ = _cli(capsys, "validate", proj / "t.yaml", "--set", "evaluation.tasks=[stereoset]",
                 "--set", "calibration.pairs.mine={source: stereoset, n: 64, split: calibration}")
    assert rc == 0


# (5) nothing silently ignored -------------------------------------------------------------------

def test_layer_alpha_indices_are_checked_and_negative_ones_work(proj, capsys):
    rc, text = _cli(capsys, "validate", proj / "t.yaml", "--set", "objectives[0].params.layer_alpha={-1: 0.3, 99: 0.5}")
    assert rc == 2 and "objectives[0].params.layer_alpha" in text and "[99] out of range" in text
    rc, text = _cli(capsys, "validate", proj / "t.yaml", "--set", "objectives[0].params.layers=[0]",
                    "--set", "objectives[0].params.layer_alpha={1: 0.5}")
    assert rc == 2 and "not among the targeted layers" in text
    from fairgptq.objectives.fair_pairs import FairPairObjective
    from fairgptq.contract.pairs import Pair
    obj = FairPairObjective([Pair("a b", "a c", "x")], alpha=0.1, layer_alpha={-1: 0.3})
    assert obj.params.alpha_for(1, "attn_out", 2) == 0.3 and obj.params.alpha_for(0, "attn_out", 2) == 0.1
    with pytest.raises(ConfigError, match="out of range"):
        FairPairObjective([Pair("a b", "a c", "x")], layer_alpha={5: 0.3}).params.alpha_for(0, "attn_out", 2)


def test_duplicate_yaml_keys_are_refused(proj, tmp_path, capsys):
    text = (proj / "t.yaml").read_text() + "name: other\n"
    rc, out = _cli(capsys, "validate", write_text(tmp_path / "dup.yaml", text))
    assert rc == 2 and "duplicate key 'name'" in out


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_pairs_differing_past_max_length_are_counted_or_refused(caplog):
    from fairgptq.contract.pairs import Pair
    from fairgptq.objectives.pair_activations import tokenize_pairs
    from tiny_model import tiny_tokenizer

    tok = tiny_tokenizer()
    late = Pair("the man is a good doctor", "the man is a good nurse", "x")
    early = Pair("he is good", "she is good", "x")
    with pytest.raises(ConfigError, match="all 1 pairs differ only after the first 3 tokens"):
        tokenize_pairs([late], tok, max_length=3)
    with caplog.at_level("WARNING", logger="fairgptq"):
        tokenize_pairs([late, early], tok, max_length=3)
    assert "1 of 2 pairs differ only after the first 3 tokens" in caplog.text


def test_pairs_alike_through_unknown_words_are_not_told_to_raise_max_length(caplog):
    # issue 35: pairs identical because their differing words are out of vocabulary were told to
    # "raise calibration.max_length", which cannot help
    from fairgptq.contract.pairs import Pair
    from fairgptq.objectives.likelihood_pairs import LikelihoodPairObjective
    from fairgptq.objectives.pair_activations import tokenize_pairs
    from tiny_model import tiny_tokenizer

    tok = tiny_tokenizer()
    unknown = Pair("the zorblax is good", "the quimbly is good", "x")
    late = Pair("the man is a good doctor", "the man is a good nurse", "x")
    with pytest.raises(ConfigError, match="differ only in words the tokenizer reads as the same tokens") as e:
        tokenize_pairs([unknown], tok, max_length=64)
    assert "max_length" not in str(e.value) and "vocabulary" in str(e.value)
    with pytest.raises(ConfigError, match=r"1 differ only after the first 3 tokens, 1 differ only in words.*"
                                          r"raise calibration.max_length .*vocabulary"):
        tokenize_pairs([unknown, late], tok, max_length=3)
    with pytest.raises(ConfigError, match="out-of-vocabulary") as e:
        LikelihoodPairObjective([unknown, unknown], target=0.5).score_request(tok)
    assert "max_length" not in str(e.value)


def test_relative_paths_resolve_against_the_pipeline_folder(proj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = load_pipeline(proj / "t.yaml")
    assert Path(pipe.spec.calibration.pairs["mine"].params["path"]) == proj / "p.jsonl"
    assert Path(pipe.spec.model.name) == proj / "tiny"


def test_resumed_sweep_refuses_changed_inputs(proj, tmp_path, capsys):
    d = _copy(proj, tmp_path / "p")
    raw = yaml.safe_load((d / "t.yaml").read_text())
    raw.update(export={"enabled": False}, sweep={"grid": {"objectives[0].params.alpha": [0.0, 0.2]}})
    write_yaml(d / "s.yaml", raw)
    out = tmp_path / "sweep"
    assert _cli(capsys, "run", d / "s.yaml", "--out", out, "--shard", "0/2")[0] == 0  # half done
    lines = (d / "p.jsonl").read_text().splitlines()
    (d / "p.jsonl").write_text("\n".join(lines[:4]) + "\n")
    rc, text = _cli(capsys, "run", d / "s.yaml", "--out", out)
    assert rc == 2 and "changed since this sweep started" in text and "p.jsonl" in text
    assert _cli(capsys, "run", d / "s.yaml", "--out", out, "--force")[0] == 0
    summary = json.loads((out / "results.json").read_text())
    n = {json.loads((out / "points" / p["name"] / "results.json").read_text())["pair_sets"]["mine"]["n"]
         for p in summary["points"]}
    assert n == {4}


def test_eval_limit_must_be_positive(finished, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", str(finished / "model"), "--limit", "-1500"])
    assert e.value.code == 2 and "--limit: must be a whole number >= 1" in capsys.readouterr().err


def test_huge_alpha_is_blamed_on_alpha(proj, tmp_path, capsys):
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "r", "--set", "objectives[0].params.alpha=1.0e+300")
    assert rc == 2 and "α=1e+300 makes H_bias overflow" in text and "half precision" not in text


# (6) one message, exit 2 or 1, no traceback -----------------------------------------------------

def _damaged(proj: Path, tmp_path: Path, how: str) -> Path:
    m = _copy(proj / "tiny", tmp_path / how)
    cfg = json.loads((m / "config.json").read_text())
    if how == "truncated":
        with open(m / "model.safetensors", "r+b") as f:
            f.truncate(5000)
    elif how == "garbage":
        (m / "model.safetensors").write_bytes(os.urandom(3000))
    elif how == "no_model_type":
        cfg.pop("model_type")
    elif how == "unknown_arch":
        cfg["model_type"] = "zzz"
    elif how == "no_tokenizer":
        for f in m.glob("tokenizer*"):
            f.unlink()
    elif how == "corrupt_config":
        (m / "config.json").write_text("{bad")
        return m
    (m / "config.json").write_text(json.dumps(cfg))
    return m


@pytest.mark.parametrize("how,expect", [("truncated", "truncated"), ("garbage", "not a safetensors file"),
                                        ("no_model_type", "no model_type"), ("unknown_arch", "'zzz' is not supported"),
                                        ("no_tokenizer", "no tokenizer files"), ("corrupt_config", "not readable JSON")])
def test_damaged_model_folders(proj, tmp_path, capsys, how, expect):
    m = _damaged(proj, tmp_path, how)
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "r", "--set", f"model.name={m}")
    assert rc == 2 and expect in text and "hub did not answer" not in text


def _plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    (d / "broken.py").write_text("def x(:\n")
    (d / "listy.py").write_text("from fairgptq.contract.hooks import hookimpl\n\n@hookimpl\n"
                                "def fairgptq_pair_sources():\n    return [1]\n")
    return d


@pytest.mark.parametrize("setting,expect", [
    ("plugins=[raises]", "failed while importing: RuntimeError: boom at import"),
    ("plugins=[broken]", "SyntaxError"), ("plugins=[listy]", "must return a dict"),
    ('plugins=["../../x"]', "not a Python module name"), ('plugins=[""]', "not a Python module name"),
    ("backend.params.threads=-3", "threads must be a whole number >= 1"),
    ("backend.params.threads=lots", "backend.params.threads: must be an integer (got 'lots')"),
    ("model.device=banana", "not a device name"),
])
def test_bad_settings_are_one_message(proj, tmp_path, capsys, monkeypatch, setting, expect):
    monkeypatch.syspath_prepend(str(_plugin_dir(tmp_path)))
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "r", "--set", setting)
    assert rc == 2 and expect in text and not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_device_without_a_gpu_is_refused_before_loading(proj, tmp_path, capsys):
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "r", "--set", "model.device=cuda")
    assert rc == 2 and "no CUDA GPU" in text


def test_bad_outputs_and_files(proj, finished, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "file")
    assert rc == 2 and "not a folder" in text
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "file" / "sub")
    assert rc == 2 and "is a file, not a folder" in text
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes((proj / "t.yaml").read_bytes() + "description: caf\xe9\n".encode("latin-1"))
    rc, text = _cli(capsys, "validate", bad)
    assert rc == 2 and "not UTF-8" in text
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "sw",
                    "--set", "sweep={grid: {description: [" + "a" * 300 + "]}}")
    assert rc == 2 and "too long" in text and not (tmp_path / "sw").exists()
    rc, text = _cli(capsys, "eval", finished / "model", "--tasks", "crows_pairs", "--out", tmp_path)
    assert rc == 2 and "not a folder" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_is_refused(proj, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", ro / "x")
    assert rc == 2 and "permission denied" in text


def test_unexpected_failure_is_one_message_with_debug_for_the_traceback(proj, tmp_path, capsys, monkeypatch):
    from fairgptq.pipeline import runner

    monkeypatch.setattr(runner, "execute", lambda *a, **k: 1 / 0)
    rc, text = _cli(capsys, "run", proj / "t.yaml", "--out", tmp_path / "r")
    assert rc == 1 and "ZeroDivisionError" in text and "--debug" in text
    assert cli.main(["--debug", "run", str(proj / "t.yaml"), "--out", str(tmp_path / "r")]) == 1
    assert "Traceback" in capsys.readouterr().err


# (7) tampered checkpoints -----------------------------------------------------------------------

def _tamper(finished: Path, tmp_path: Path, edit) -> Path:
    m = _copy(finished / "model", tmp_path / "m")
    tensors = load_file(str(m / "model.safetensors"))
    edit(tensors, m)
    save_file(tensors, str(m / "model.safetensors"), metadata={"format": "pt"})
    return m


def test_flipped_bytes_are_caught_by_the_content_hash(finished, tmp_path, capsys):
    m = _copy(finished / "model", tmp_path / "m")
    data = bytearray((m / "model.safetensors").read_bytes())
    data[-100] ^= 0x40
    (m / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match="content hash differs"):
        load_gptq_checkpoint(m)
    rc, text = _cli(capsys, "eval", m, "--tasks", "crows_pairs", "--limit", "2")
    assert rc == 2 and "--trust-unverified" in text
    load_gptq_checkpoint(m, trust_unverified=True)  # the user's explicit choice


def _first_module(tensors) -> str:
    return sorted(k for k in tensors if k.endswith(".scales"))[0][: -len(".scales")]


@pytest.mark.parametrize("what,expect", [
    ("nan_scale", "non-finite"), ("missing_qzeros", "missing qzeros"), ("g_idx", "g_idx holds group indices"),
    ("bits", "do not fit 8-bit packing"), ("truncated", "not a readable safetensors file")])
def test_damaged_tensors_are_refused_at_load(finished, tmp_path, what, expect):
    def edit(tensors, folder):
        name = _first_module(tensors)
        if what == "nan_scale":
            tensors[f"{name}.scales"][0, 0] = float("nan")
        elif what == "missing_qzeros":
            del tensors[f"{name}.qzeros"]
        elif what == "g_idx":
            tensors[f"{name}.g_idx"][0] = 999
        elif what == "bits":
            qc = json.loads((folder / "quantize_config.json").read_text())
            (folder / "quantize_config.json").write_text(json.dumps({**qc, "bits": 8}))
    m = _tamper(finished, tmp_path, edit)
    if what == "truncated":
        with open(m / "model.safetensors", "r+b") as f:
            f.truncate(4000)
    with pytest.raises(CheckpointIntegrityError, match=expect):
        load_gptq_checkpoint(m, trust_unverified=True)


# (8) resources ----------------------------------------------------------------------------------

def test_yaml_alias_bomb_is_refused_fast(tmp_path, capsys):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    t0 = time.perf_counter()
    rc, text = _cli(capsys, "validate", write_text(tmp_path / "bomb.yaml", "\n".join(lines) + "\n"))
    assert rc == 2 and "expands to more than" in text and time.perf_counter() - t0 < 10


def test_calibration_text_beyond_memory_is_refused(proj, capsys, real_data_dir):
    rc, text = _cli(capsys, "validate", proj / "t.yaml", "--set", "calibration.text={n: 100000000, seqlen: 512}")
    assert rc == 2 and "calibration.text.n" in text and "GiB" in text


def test_marker_and_complete_files_are_written(finished):
    assert (finished / MARKER).is_file() and (finished / COMPLETE).is_file()
    qc = json.loads((finished / "model" / "quantize_config.json").read_text())
    assert set(fairgptq_record(qc)["integrity"]["sha256"]) == {"model.safetensors"}


def test_lock_is_released_after_a_run(tmp_path):
    with run_lock(tmp_path / "x"):
        pass
    with run_lock(tmp_path / "x"):
        pass
