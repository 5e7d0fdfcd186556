"""Repeats over seeds, per-item records and the held-out pair gap, through real pipeline runs (tiny model).

The tiny model proves the plumbing only: that every summary is recomputed exactly from its
item file, that each (point, seed) unit draws its calibration from its seed and resumes on
its own, that shards split units, and that the sweep report pairs each point with the
same seed's plain GPTQ.
"""
from __future__ import annotations

import json

import pytest

from fairgptq.evaluation.items import read_items, summarize
from fairgptq.pipeline import load_pipeline
from fairgptq.pipeline import runner
from fairgptq.pipeline.rundir import is_complete

from tiny_model import save_tiny_llama, tiny_pipeline, write_yaml

PAIRS = [(f"The {w} man was a {job}.", f"The {w} woman was a {job}.") for w in ("old", "young", "tall", "rich")
         for job in ("doctor", "nurse", "pilot", "chef")]


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory, real_data_dir):
    d = tmp_path_factory.mktemp("repeats")
    pairs = d / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"stereo": s, "anti": a, "category": "gender", "id": str(i)}) + "\n"
                             for i, (s, a) in enumerate(PAIRS)))
    source = {"source": "pair_file", "params": {"path": str(pairs), "category_col": "category", "id_col": "id"}}
    raw = tiny_pipeline(save_tiny_llama(d / "model"), pairs, export={"enabled": False},
                        calibration={"pairs": {"mine": {**source, "split": "calibration", "n": 5}}},
                        evaluation={"tasks": ["wikitext2", "crows_pairs", "stereoset", "piqa"], "limit": 12,
                                    "max_tokens": 512, "seqlen": 64,
                                    "pair_gap": {"pairs": {**source, "split": "holdout"}}},
                        sweep={"cases": [{"objectives[0].params.alpha": 0.0}, {"objectives[0].params.alpha": 0.5}]},
                        repeats={"seeds": [0, 1]})
    return write_yaml(d / "p.yaml", raw)


@pytest.fixture(scope="module")
def finished(pipeline_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run"
    pipe = load_pipeline(pipeline_file)
    assert [p.name for p in pipe.points] == ["000_alpha=0.0/seed=0", "001_alpha=0.5/seed=0",
                                             "000_alpha=0.0/seed=1", "001_alpha=0.5/seed=1"]
    runner.run_pipeline(pipe, out, shard=(0, 2))
    assert not is_complete(out)  # the other shard's units are missing
    runner.run_pipeline(pipe, out, shard=(1, 2))
    assert is_complete(out)
    return out


def test_units_draw_calibration_from_their_seed(finished):
    cfg = lambda name: json.loads((finished / "points" / name / "results.json").read_text())  # noqa: E731
    s0, s1 = cfg("000_alpha=0.0/seed=0"), cfg("000_alpha=0.0/seed=1")
    assert s0["pair_sets"]["mine"]["seed"] == 0 and s1["pair_sets"]["mine"]["seed"] == 1
    assert s0["pair_sets"]["mine"]["sha256_16"] != s1["pair_sets"]["mine"]["sha256_16"]
    # the yardstick does not move with the seed
    assert s0["config"]["evaluation"]["pair_gap"]["pairs"]["seed"] == s1["config"]["evaluation"]["pair_gap"]["pairs"]["seed"]


def test_every_summary_is_recomputed_from_its_item_file(finished):
    for unit in ("000_alpha=0.0/seed=0", "001_alpha=0.5/seed=1"):
        folder = finished / "points" / unit
        results = json.loads((folder / "results.json").read_text())
        items = read_items(folder / "items")
        assert set(items) == {"wikitext2", "crows_pairs", "stereoset", "piqa"}
        for task, records in items.items():
            stored = results["evaluation"]["tasks"][task]
            again = summarize(records)
            for key, value in again.items():
                if isinstance(value, float):
                    assert value == pytest.approx(stored[key], rel=1e-12), (task, key)
                else:
                    assert value == stored[key], (task, key)
        assert "items" not in json.dumps(results["evaluation"])  # the records live in items/ only
    float_items = read_items(finished / "float" / "items") if (finished / "float").exists() else {}
    assert float_items == {}  # no float baseline asked for


def test_pair_gap_marks_the_targeted_modules(finished):
    plain = json.loads((finished / "points/000_alpha=0.0/seed=0/results.json").read_text())["pair_gap"]
    fair = json.loads((finished / "points/001_alpha=0.5/seed=0/results.json").read_text())["pair_gap"]
    assert plain["n_targeted"] == 0 and plain["ratio_targeted"] is None
    assert fair["n_targeted"] == 4  # attn_out + mlp_out of both tiny layers
    assert set(plain["modules"]) == set(fair["modules"])
    assert all(m["float"] > 0 for m in fair["modules"].values())


def test_sweep_report_pairs_each_point_with_the_same_seeds_plain_gptq(finished):
    summary = json.loads((finished / "results.json").read_text())
    fair_units = [u for u in summary["points"] if not u["plain"]]
    assert [u["vs_reference"]["reference"] for u in fair_units] == ["000_alpha=0.0/seed=0", "000_alpha=0.0/seed=1"]
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups["000_alpha=0.0"]["plain"] and "vs_reference" not in groups["000_alpha=0.0"]
    across = groups["001_alpha=0.5"]["vs_reference"]["across_seeds"]
    assert {"crows_pairs.pct_stereotype", "wikitext2.perplexity", "pair_gap.ratio_targeted"} <= set(across)
    assert groups["001_alpha=0.5"]["metrics"]["crows_pairs.pct_stereotype"]["n"] == 2
    report = (finished / "report.md").read_text()
    assert "Against plain GPTQ on the same seeds" in report and "seeds.png" in summary["plots"]


def test_rerun_resumes_per_unit(finished, pipeline_file, monkeypatch):
    import shutil
    shutil.rmtree(finished / "points" / "001_alpha=0.5" / "seed=1")
    (finished / ".complete").unlink()
    ran = []
    real = runner.execute
    monkeypatch.setattr(runner, "execute", lambda *a, **kw: ran.append(kw["point"]) or real(*a, **kw))
    runner.run_pipeline(load_pipeline(pipeline_file), finished)
    assert ran == [{"objectives[0].params.alpha": 0.5, "seed": 1}] and is_complete(finished)


def test_report_and_compare_groups_commands(finished, capsys):
    from fairgptq import cli
    before = (finished / "results.json").read_text()
    assert cli.main(["report", str(finished), "--metrics", "crows_pairs.pct_stereotype", "--rewrite",
                     "--plot", str(finished.parent / "forest.png")]) == 0
    out = capsys.readouterr().out
    assert "| crows_pairs.pct_stereotype |" in out and "plain GPTQ, mean [95 % CI] (n 2 seeds)" in out
    assert (finished.parent / "forest.png").stat().st_size > 0
    assert json.loads((finished / "results.json").read_text())["groups"] == json.loads(before)["groups"]
    assert cli.main(["report", str(finished), "--by-category", "crows_pairs"]) == 0
    assert "crows_pairs category" in capsys.readouterr().out
    assert cli.main(["compare", "--groups", str(finished / "points" / "000_alpha=0.0"),
                     str(finished / "points" / "001_alpha=0.5"), "--labels", "plain", "α 0.5"]) == 0
    assert "α 0.5 − plain, seed-matched" in capsys.readouterr().out
    assert cli.main(["compare", str(finished)]) == 2  # neither --baseline nor --groups
