"""Sweeps: grid x cases expansion, and resuming an interrupted sweep (finished points skipped)."""
from __future__ import annotations

import io
import json
import os
import shutil

import pytest
from rich.console import Console

from fairgptq.pipeline import load_pipeline
from fairgptq.pipeline import runner
from fairgptq.pipeline.rundir import COMPLETE, RunDirError, is_complete
from fairgptq.pipeline.sweep import expand, with_repeats

from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml


def test_grid_is_every_combination_with_stable_names():
    pts = expand({"a": {"x": 1, "y": "p"}, "sweep": {}}, {"a.x": [0, 0.5], "a.y": ["lower", "lower+upper"]})
    assert [p.name for p in pts] == ["000_x=0_y=lower", "001_x=0_y=lower+upper", "002_x=0.5_y=lower",
                                     "003_x=0.5_y=lower+upper"]
    assert pts[3].raw == {"a": {"x": 0.5, "y": "lower+upper"}}


def test_cases_times_grid_and_colliding_short_names():
    pts = expand({"o": [{"alpha": 0}, {"alpha": 0}]},
                 {"o[1].alpha": [1, 2]}, [{"o[0].alpha": 0.1}, {"o[0].alpha": 0.5}])
    assert len(pts) == 4
    assert pts[1].values == {"o[0].alpha": 0.1, "o[1].alpha": 2}
    assert pts[1].name == "001_o~0~.alpha=0.1_o~1~.alpha=2"


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    raw = tiny_pipeline(save_tiny_llama(d / "model"), write_pair_file(d / "pairs.jsonl"),
                        export={"enabled": False}, sweep={"grid": {"objectives[0].params.alpha": [0.0, 0.2]}})
    return write_yaml(d / "sweep.yaml", raw)


def _ran_points(monkeypatch) -> list:
    ran = []
    real = runner.execute

    def spy(spec, resolved, run_dir, console, **kw):
        ran.append(kw["point"]["objectives[0].params.alpha"])
        return real(spec, resolved, run_dir, console, **kw)

    monkeypatch.setattr(runner, "execute", spy)
    return ran


def test_interrupted_sweep_resumes_skipping_finished_points(sweep_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    ran = _ran_points(monkeypatch)
    pipe = load_pipeline(sweep_file)
    runner.run_pipeline(pipe, out)
    assert ran == [0.0, 0.2] and is_complete(out)
    summary = json.loads((out / "results.json").read_text())
    assert [p["name"] for p in summary["points"]] == ["000_alpha=0.0", "001_alpha=0.2"]
    assert summary["points"][0]["max_delta_w_rel"] is None and summary["points"][1]["max_delta_w_rel"] > 0
    assert (out / "report.md").read_text().count("points/") == 2

    # interrupted: the sweep never finished, point 1 was cut off mid-write
    first = out / "points" / "000_alpha=0.0"
    stamp = (first / "results.json").stat().st_mtime_ns
    (out / COMPLETE).unlink()
    (out / "points" / "001_alpha=0.2" / COMPLETE).unlink()
    ran.clear()
    runner.run_pipeline(pipe, out)
    assert ran == [0.2]  # the complete point is skipped, the incomplete one redone
    assert (first / "results.json").stat().st_mtime_ns == stamp
    assert is_complete(out) and is_complete(out / "points" / "001_alpha=0.2")


def test_complete_sweep_is_not_overwritten_without_force(sweep_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    ran = _ran_points(monkeypatch)
    pipe = load_pipeline(sweep_file)
    runner.run_pipeline(pipe, out)
    with pytest.raises(RunDirError, match="complete sweep"):
        runner.run_pipeline(pipe, out)
    other = load_pipeline(sweep_file, ["quantization.group_size=64"])
    (out / COMPLETE).unlink()
    with pytest.raises(RunDirError, match="different sweep"):
        runner.run_pipeline(other, out)
    ran.clear()
    runner.run_pipeline(other, out, force=True)
    assert ran == [0.0, 0.2]
    shutil.rmtree(out)


def test_shards_split_a_sweep_and_the_last_one_writes_the_summary(sweep_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    ran = _ran_points(monkeypatch)
    pipe = load_pipeline(sweep_file)
    runner.run_pipeline(pipe, out, shard=(1, 2))
    assert ran == [0.2] and not is_complete(out) and not (out / "results.json").exists()
    runner.run_pipeline(pipe, out, shard=(0, 2))
    assert ran == [0.2, 0.0] and is_complete(out)
    summary = json.loads((out / "results.json").read_text())
    assert [p["name"] for p in summary["points"]] == ["000_alpha=0.0", "001_alpha=0.2"]


@pytest.mark.parametrize("n_cases, n_seeds, count", [(4, 5, 2), (2, 2, 2), (3, 4, 2), (4, 3, 4)])
def test_shards_deal_every_case_across_shards(n_cases, n_seeds, count):
    # seed-major index mod N gave shard 0 every seed of cases 0 and 2 when N divides the case count:
    # a case copied by --reuse then left one shard idle while the other ran two cases
    cases = [{"objectives[0].params.alpha": float(a)} for a in range(n_cases)]
    units = with_repeats(expand({"objectives": [{"params": {}}]}, {}, cases), list(range(n_seeds)))
    owners = [[u for u in units if u.in_shard(i, count)] for i in range(count)]
    assert sorted(u.index for shard in owners for u in shard) == list(range(n_cases * n_seeds))  # each once
    for case in {u.group for u in units}:
        per_shard = [sum(u.group == case for u in shard) for shard in owners]
        assert max(per_shard) - min(per_shard) <= 1, (case, per_shard)


def test_bad_shard_is_bad_input(sweep_file, capsys):
    from fairgptq import cli
    assert cli.main(["run", str(sweep_file), "--shard", "2/2"]) == 2
    assert "--shard '2/2': give I/N with 0 <= I < N" in capsys.readouterr().err


def _point(values: dict, stereo: float, ppl: float) -> dict:
    return {"values": values, "metrics": {"crows_pairs.pct_stereotype": stereo, "wikitext2.perplexity": ppl}}


def test_sweep_plot_draws_the_alpha_zero_case_and_float_model_as_references(tmp_path, monkeypatch):
    from fairgptq.analysis import run_report as report

    import matplotlib.axes

    drawn: list[tuple[str, float, str]] = []
    real_axhline = matplotlib.axes.Axes.axhline

    def spy(self, y=0, *args, **kwargs):
        drawn.append((self.get_ylabel(), y, kwargs.get("label", "")))
        return real_axhline(self, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy)
    keys = ["o.alpha", "o.layers"]
    points = [_point({"o.alpha": 0.0}, 54.2, 29.3),
              _point({"o.alpha": 0.1, "o.layers": "all"}, 53.0, 30.0),
              _point({"o.alpha": 0.5, "o.layers": "all"}, 48.0, 3750.0)]
    baseline = {"tasks": {"crows_pairs": {"pct_stereotype": 55.6}, "wikitext2": {"perplexity": 17.0}}}
    assert report.plot_sweep(points, keys, tmp_path / "sweep.png", baseline)
    assert (tmp_path / "sweep.png").stat().st_size > 0
    labels = {label for _, _, label in drawn}
    assert {"alpha=0.0", "float model", "ideal (50)"} <= labels
    assert ("crows_pairs.pct_stereotype", 54.2, "alpha=0.0") in drawn    # plain GPTQ: a line, not a series
    assert not report.plot_sweep([_point({"o.layers": "all"}, 50, 20)], ["o.layers"], tmp_path / "x.png")


def _other_sweep(sweep_file, tmp_path, **changes):
    import yaml
    raw = yaml.safe_load(sweep_file.read_text())
    raw.update(name="other", description="another question's grid", **changes)
    return load_pipeline(write_yaml(tmp_path / "other.yaml", raw))


def test_reuse_copies_the_same_run_from_another_sweep_and_computes_the_rest(sweep_file, tmp_path, monkeypatch):
    first = tmp_path / "first"
    ran = _ran_points(monkeypatch)
    runner.run_pipeline(load_pipeline(sweep_file), first)
    ran.clear()
    second = tmp_path / "second"
    other = _other_sweep(sweep_file, tmp_path, sweep={"grid": {"objectives[0].params.alpha": [0.0, 0.5]}})
    said = Console(file=io.StringIO(), width=300)
    runner.run_pipeline(other, second, reuse=[first], console=said)
    assert ran == [0.5]  # α 0 is the same run under another name: copied, not recomputed
    assert f"--reuse: 1 of 2 point(s) to run matched a finished point of {first}" in said.file.getvalue()
    copied = json.loads((second / "points" / "000_alpha=0.0" / "results.json").read_text())
    original = json.loads((first / "points" / "000_alpha=0.0" / "results.json").read_text())
    assert copied["reused_from"]["run"] == str((first / "points" / "000_alpha=0.0").resolve())
    assert copied["quantization"] == original["quantization"]
    assert "not recomputed" in (second / "points" / "000_alpha=0.0" / "run.log").read_text()
    summary = json.loads((second / "results.json").read_text())
    assert [p["name"] for p in summary["points"]] == ["000_alpha=0.0", "001_alpha=0.5"]

    ran.clear()  # a setting that computes something (the grid) differs: nothing is taken
    said = Console(file=io.StringIO(), width=300)
    runner.run_pipeline(_other_sweep(sweep_file, tmp_path, quantization={"bits": 4, "group_size": 64}),
                        tmp_path / "third", reuse=[first], console=said)
    assert ran == [0.0, 0.2]
    assert "--reuse: 0 of 2 point(s) to run matched" in said.file.getvalue()  # said also when none matched


def test_reuse_refuses_a_sweep_that_read_other_inputs(sweep_file, tmp_path):
    from fairgptq.core.errors import ConfigError
    first = tmp_path / "first"
    runner.run_pipeline(load_pipeline(sweep_file), first, shard=(0, 2))
    inputs = json.loads((first / "inputs.json").read_text())
    path = next(iter(inputs))
    inputs[path] = "sha256:0000"
    (first / "inputs.json").write_text(json.dumps(inputs))
    with pytest.raises(ConfigError, match=f"--reuse {first}: it read other contents of {path}"):
        runner.run_pipeline(load_pipeline(sweep_file), tmp_path / "second", reuse=[first])
    with pytest.raises(ConfigError, match="not a sweep folder"):
        runner.run_pipeline(load_pipeline(sweep_file), tmp_path / "second", reuse=[tmp_path])


def test_reuse_takes_the_float_baseline_only_for_the_same_model_and_evaluation(tmp_path):
    from fairgptq.pipeline.reuse import ReusablePoints
    sweep = tmp_path / "sweep"
    (sweep / "float" / "items").mkdir(parents=True)
    (sweep / "float" / "items" / "crows_pairs.jsonl").write_text("{}\n")
    resolved = {"name": "a", "model": {"name": "m"}, "evaluation": {"tasks": ["crows_pairs"]}}
    write_yaml(sweep / "sweep.yaml", resolved)
    (sweep / "inputs.json").write_text("{}")
    (sweep / "baseline.json").write_text(json.dumps({"crows_pairs.pct_stereotype": 55.0}))
    reusable = ReusablePoints([sweep], {}, {})
    target = tmp_path / "target"
    target.mkdir()
    assert reusable.baseline({**resolved, "evaluation": {"tasks": ["wikitext2"]}}, target) is None
    assert not (target / "baseline.json").exists()
    assert reusable.baseline({**resolved, "name": "b"}, target) == {"crows_pairs.pct_stereotype": 55.0}
    assert (target / "float" / "items" / "crows_pairs.jsonl").is_file()


def test_a_copy_of_a_copy_names_the_run_that_computed_it(tmp_path):
    from fairgptq.pipeline.reuse import ReusablePoints
    original, copy, again = tmp_path / "a" / "p", tmp_path / "b" / "p", tmp_path / "c" / "p"
    for d in (original, copy, again):
        d.mkdir(parents=True)
    (original / "results.json").write_text(json.dumps({"pipeline": "a"}))
    reusable = ReusablePoints([], {}, {})
    reusable.copy(original, copy)
    reusable.copy(copy, again)
    assert json.loads((again / "results.json").read_text())["reused_from"] == {"run": str(original.resolve()),
                                                                               "pipeline": "a"}


def test_a_shard_never_recomputes_a_point_another_process_finished_meanwhile(sweep_file, tmp_path, monkeypatch):
    # issue 35: two processes on the same --shard; the second saw the point incomplete, waited for its lock,
    # then recomputed it and swapped its copy over the first's finished one
    out = tmp_path / "run"
    pipe = load_pipeline(sweep_file)
    runner.run_pipeline(pipe, out)
    point = out / "points" / "000_alpha=0.0"
    stamp = (point / "results.json").stat().st_mtime_ns
    (out / COMPLETE).unlink()
    seen: set = set()
    real = runner.is_complete

    def checked_before_the_other_process_finished(path):
        if path.parent.name == "points" and path not in seen:
            seen.add(path)
            return False
        return real(path)

    monkeypatch.setattr(runner, "is_complete", checked_before_the_other_process_finished)
    ran = _ran_points(monkeypatch)
    runner.run_pipeline(pipe, out, shard=(0, 2))
    assert ran == []  # taken, not rerun
    assert (point / "results.json").stat().st_mtime_ns == stamp and is_complete(point)


def test_a_shard_whose_point_is_being_written_stops_naming_the_holder(sweep_file, tmp_path, capsys):
    from fairgptq import cli
    from fairgptq.pipeline.locking import run_lock
    out = tmp_path / "run"
    assert cli.main(["run", str(sweep_file), "--out", str(out), "--shard", "1/2"]) == 0
    with run_lock(out / "points" / "000_alpha=0.0"):  # another process is computing the point
        assert cli.main(["run", str(sweep_file), "--out", str(out), "--shard", "0/2"]) == 2
    err = capsys.readouterr().err
    assert "000_alpha=0.0 is being written by another fairgptq run" in err and f"pid {os.getpid()}" in err
