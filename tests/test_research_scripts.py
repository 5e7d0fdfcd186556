"""The research table script (scripts/seed_difference_table.py) on a synthetic sweep summary."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fairgptq.analysis import seed_tables
from fairgptq.core.errors import ConfigError
from script_loading import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "seed_difference_table.py"


def _stat(mean, lo, hi, p=None):
    return {"n": 3, "mean": mean, "sd": 1.0, "lo": lo, "hi": hi, **({"p": p} if p is not None else {})}


def test_rows_hold_float_plain_interval_and_paired_differences():
    summary = {"baseline": {"tasks": {"crows_pairs": {"pct_stereotype": 55.5}}},
               "groups": [{"group": "000_alpha=0.0", "plain": True, "seeds": [0, 1, 2],
                           "metrics": {"crows_pairs.pct_stereotype": _stat(56.0, 54.0, 58.0)}},
                          {"group": "001_alpha=0.1", "plain": False, "seeds": [0, 1, 2],
                           "vs_reference": {"across_seeds": {
                               "crows_pairs.pct_stereotype": _stat(-1.25, -3.5, 1.0, p=0.21)}}}],
               "points": [{"group": "000_alpha=0.0", "seconds": 100.0}, {"group": "000_alpha=0.0", "seconds": 120.0},
                          {"group": "001_alpha=0.1", "seconds": 150.0}]}
    lines = seed_tables.difference_table(summary, ["crows_pairs.pct_stereotype"], ["fair"]).splitlines()
    assert lines[0] == "| metric | float | plain GPTQ, mean [95 % CI] (n 3 seeds) | fair − plain |"
    assert lines[2] == "| crows_pairs.pct_stereotype | 55.50 | 56.00 [54.00, 58.00] | -1.25 [-3.50, +1.00], p 0.21 |"
    assert lines[3] == "| time per run (s) | – | 110 | 150 |"
    with pytest.raises(ConfigError, match="2 labels for 1 compared points"):
        seed_tables.difference_table(summary, ["crows_pairs.pct_stereotype"], ["a", "b"])


def test_a_runs_tracked_metrics_include_every_task_kinds_score():
    """Pair-preference tasks (StereoSet intersentence, RedditBias) are judged by pct_prefer_biased: a sweep must
    carry it into its across-seed statistics, which read a point's headline metrics."""
    from fairgptq.analysis.run_report import headline_metrics
    evaluation = {"tasks": {"redditbias_target_swap": {"pct_prefer_biased": 69.7, "likelihood_diff": 2.4, "n": 9},
                            "crows_pairs": {"pct_stereotype": 55.0}, "wikitext2": {"perplexity": 17.0}}}
    assert headline_metrics(evaluation) == pytest.approx({
        "redditbias_target_swap.pct_prefer_biased": 69.7, "redditbias_target_swap.pct_prefer_biased_from_parity": 19.7,
        "crows_pairs.pct_stereotype": 55.0, "crows_pairs.pct_stereotype_from_parity": 5.0,
        "wikitext2.perplexity": 17.0})


def test_pooled_mcnemar_is_per_task_never_across_tasks():
    """CrowS-Pairs and RedditBias pairs are different tests: each gets its own pooled count and p."""
    from fairgptq.analysis.seeds import group_statistics

    def unit(seed, plain, rows=None):
        u = {"group": "plain" if plain else "fair", "values": {"seed": seed}, "plain": plain, "seed": seed,
             "metrics": {"crows_pairs.pct_stereotype": 55.0 + seed}}
        if rows:
            u["vs_reference"] = {"reference": f"plain/seed={seed}", "rows": rows}
        return u

    rows = [{"task": "crows_pairs", "metric": "pct_stereotype", "diff": -0.5, "discordant": {"a_only": 10, "b_only": 8}},
            {"task": "redditbias_target_swap", "metric": "pct_prefer_biased", "diff": 3.0,
             "discordant": {"a_only": 20, "b_only": 60}}]
    groups = group_statistics([unit(s, True) for s in (0, 1)] + [unit(s, False, rows) for s in (0, 1)])
    pooled = next(g for g in groups if g["group"] == "fair")["vs_reference"]["pooled_mcnemar"]
    assert pooled["crows_pairs"]["a_only"] == 20 and pooled["crows_pairs"]["b_only"] == 16
    assert pooled["crows_pairs"]["p"] > 0.5 and pooled["redditbias_target_swap"]["p"] < 1e-6


def test_per_category_differences_come_from_the_item_records(tmp_path):
    import json

    def write(name, choices):
        folder = tmp_path / "points" / name / "items"
        folder.mkdir(parents=True)
        lines = [{"id": f"p{i}", "bias_type": cat, "choice": c} for i, (cat, c) in enumerate(choices)]
        (folder / "crows_pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    base = [("gender", 1), ("gender", 0), ("age", 1), ("age", 1)]
    for seed, flip in ((0, 0), (1, 1)):
        write(f"plain/seed={seed}", base)
        write(f"fair/seed={seed}", [("gender", 0), ("gender", flip), ("age", 0), ("age", 1)])
        # a second plain group (another H source) whose points must not serve as fair's reference
        write(f"plain_text/seed={seed}", [("gender", 0), ("gender", 0), ("age", 0), ("age", 0)])
    for name in ("plain", "fair", "plain_text"):
        (tmp_path / "points" / name / "seed=0" / "config.yaml").write_text("evaluation: {pair_split: all}\n")
    summary = {"points": [{"name": f"{g}/seed={s}", "group": g, "seed": s, "plain": g != "fair"}
                          for g in ("plain", "fair", "plain_text") for s in (0, 1)],
               "groups": [{"group": "plain", "plain": True},
                          {"group": "fair", "plain": False, "reference": "plain", "vs_reference": {}},
                          {"group": "plain_text", "plain": True}]}
    lines = seed_tables.category_table(tmp_path, summary, "crows_pairs", ["fair"]).splitlines()
    assert lines[0] == "| crows_pairs category (all pairs) | fair − plain |"
    assert lines[2] == "| age (n 2) | -50.00 in every seed |"  # no spread, so no interval
    assert lines[3].startswith("| gender (n 2) | -25.00 [")  # seed 0: -50 points, seed 1: 0


def _script(name: str):
    return load_script(f"scripts/{name}.py")


def _frontier_sweep(tmp_path, fair: dict[str, tuple[float, float, float, float, float, float]], seeds=(0, 1, 2, 3, 4)):
    """A sweep summary with one plain group and Fair groups: (ΔCrowS, lo, hi, McNemar p, PPL, mean zero-shot acc)."""
    import json
    plain = {"group": "000_alpha=0.0", "plain": True, "seeds": list(seeds),
             "metrics": {"wikitext2.perplexity": _stat(30.0, 29, 31), "stereoset.SS": _stat(60.0, 59, 61),
                         **{m: _stat(0.5, 0.4, 0.6) for m in ("piqa.acc", "openbookqa.acc", "siqa.acc")}}}
    groups, points = [plain], []
    for name, (d, lo, hi, p_mc, ppl, acc) in fair.items():
        groups.append({"group": name, "plain": False, "seeds": list(seeds), "reference": plain["group"],
                       "metrics": {"wikitext2.perplexity": _stat(ppl, ppl - 1, ppl + 1),
                                   "stereoset.SS": _stat(59.0, 58, 60),
                                   **{m: _stat(acc, acc - 0.1, acc + 0.1)
                                      for m in ("piqa.acc", "openbookqa.acc", "siqa.acc")}},
                       "vs_reference": {"across_seeds": {"crows_pairs.pct_stereotype": _stat(d, lo, hi, p=0.01)},
                                        "pooled_mcnemar": {"crows_pairs": {"a_only": 1, "b_only": 2, "p": p_mc}}}})
        for s in seeds:
            folder = tmp_path / "points" / name / f"seed={s}"
            folder.mkdir(parents=True)
            module = {"fair_mode": "exact", "hbias_trace_ratio": 0.01 * (s + 1), "fair_radius": 0.5}
            (folder / "results.json").write_text(json.dumps({"quantization": {
                "modules": [module, {"fair_mode": None}],
                "summary": {"overshoots": 0, "eigen_repairs": 1, "max_delta_w_rel": 0.2}}}))
            points.append({"name": f"{name}/seed={s}", "group": name, "seed": s, "seconds": 100.0 + s})
    (tmp_path / "results.json").write_text(json.dumps({"groups": groups, "points": points}))
    return tmp_path


def test_the_frontier_checks_every_recipe_criterion_and_names_what_a_point_misses(tmp_path):
    mod = _script("recipe_frontier")
    sweep = _frontier_sweep(tmp_path, {"001_alpha=0.3": (-2.5, -3.5, -1.5, 0.001, 31.0, 0.495),
                                       "002_alpha=1.0": (-4.0, -5.0, -3.0, 0.001, 45.0, 0.40),
                                       "003_alpha=0.1": (-0.5, -1.5, 0.5, 0.4, 30.1, 0.5)})
    points = {p.group: p for p in mod.compared_points(sweep)}
    assert points["001_alpha=0.3"].failed == [] and points["001_alpha=0.3"].stability["trace_ratio"] == 0.03
    assert points["002_alpha=1.0"].failed == ["PPL <= 1.05x", "zero-shot >= 97 %"]
    assert points["003_alpha=0.1"].failed == ["drop >= 2", "significant"]
    assert mod.verdict(list(points.values())).startswith("Meets every criterion: " + sweep.name + " / 001_alpha=0.3")
    table = mod.table(list(points.values())).splitlines()
    assert table[2].startswith("| P1 | ") and "| 5 | -2.50 [-3.50, -1.50], p 0.01 | 0.001 | 1.033 | 99.0 % | -1.00 |" in table[2]


def test_the_frontier_reports_the_best_point_that_keeps_the_model_when_none_passes(tmp_path):
    mod = _script("recipe_frontier")
    sweep = _frontier_sweep(tmp_path, {"001_alpha=1.0": (-4.0, -5.0, -3.0, 0.001, 45.0, 0.40),
                                       "002_alpha=0.1": (-0.7, -1.5, 0.1, 0.2, 30.3, 0.5)}, seeds=(0, 1, 2))
    text = mod.verdict(mod.compared_points(sweep))
    assert text.startswith("No point meets every criterion. Largest CrowS-Pairs drop among the points that keep "
                           "the model: " + sweep.name + " / 002_alpha=0.1, -0.70 [-1.50, +0.10]")
    assert text.endswith("it misses: drop >= 2, significant, >= 5 seeds.")
    mod.plot(mod.compared_points(sweep), tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 0


def test_reach_splits_each_pairs_preference_into_span_and_continuation():
    mod = _script("crows_reach")
    items = [{"span_more": -1.0, "span_less": -2.0, "rest_more": -5.0, "rest_less": -3.0},  # span +1, rest −2: rest decides
             {"span_more": -1.0, "span_less": -3.0, "rest_more": -2.0, "rest_less": -2.5},  # both stereotypical
             {"span_more": -4.0, "span_less": -3.0, "rest_more": 0.0, "rest_less": 0.0}]   # span at the end: no rest
    r = mod.reach(items)
    assert r["n"] == 3 and r["pct_stereotype"] == 100 / 3
    assert r["pct_span_only"] == 200 / 3 and r["pct_continuation_only"] == 100 / 3
    assert r["pct_decided_by_continuation"] == 100 / 3
    assert r["continuation_share"] == 2.5 / (4.0 + 2.5)


def test_a_folder_without_a_sweep_summary_is_named_for_what_it_is(tmp_path):
    from fairgptq.pipeline.rundir import RunDirError, read_sweep_summary
    with pytest.raises(RunDirError, match="does not exist"):
        read_sweep_summary(tmp_path / "missing")
    with pytest.raises(RunDirError, match="not a sweep folder"):
        read_sweep_summary(tmp_path)
    (tmp_path / "sweep.yaml").write_text("name: x\n")
    (tmp_path / "points" / "000_alpha=0.0" / "seed=0").mkdir(parents=True)
    (tmp_path / "points" / "000_alpha=0.0" / "seed=0" / ".complete").touch()
    with pytest.raises(RunDirError, match=r"unfinished sweep \(1 point\(s\) complete.*rerun the same"):
        read_sweep_summary(tmp_path)
    (tmp_path / "results.json").write_text('{"groups": []}')
    assert read_sweep_summary(tmp_path) == {"groups": []}
    for script in ("seed_difference_table", "plot_seed_differences", "recipe_frontier"):
        proc = subprocess.run([sys.executable, str(SCRIPT.parent / f"{script}.py"), str(tmp_path / "missing"),
                               *(["--out", str(tmp_path / "x.png")] if script == "plot_seed_differences" else [])],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and proc.stderr.startswith(f"{script}.py: error: ") and "Traceback" not in proc.stderr


def test_reach_names_the_missing_task_when_a_run_has_no_decomposed_records(tmp_path):
    mod = _script("crows_reach")
    (tmp_path / "items").mkdir()
    with pytest.raises(mod.NoDecomposition, match="evaluated with the crows_pairs_decomposed task"):
        mod._of(tmp_path)
    with pytest.raises(mod.NoDecomposition, match="evaluation.tasks"):
        mod._of(tmp_path / "not-a-run")


def test_a_sweep_with_one_plain_group_per_h_source_gets_one_reference_column_each():
    def group(name, plain, ref=None, diff=None):
        g = {"group": name, "plain": plain, "seeds": [0, 1, 2], "metrics": {"wikitext2.perplexity": _stat(30.0, 29, 31)}}
        if ref:
            g.update(reference=ref, vs_reference={"across_seeds": {"wikitext2.perplexity": _stat(diff, -1, 1, p=0.5)}})
        return g
    summary = {"groups": [group("pairs0", True), group("pairs1", False, "pairs0", 0.5),
                          group("text0", True), group("text1", False, "text0", -0.25)]}
    lines = seed_tables.difference_table(summary, ["wikitext2.perplexity"], ["α 0.1", "α 0.1"], ["pairs H", "WikiText-2 H"])
    head, row = lines.splitlines()[0], lines.splitlines()[2]
    assert head == ("| metric | float | plain GPTQ (pairs H), mean [95 % CI] (n 3 seeds) | α 0.1 − plain | "
                    "plain GPTQ (WikiText-2 H), mean [95 % CI] (n 3 seeds) | α 0.1 − plain |")
    assert row == ("| wikitext2.perplexity | – | 30.00 [29.00, 31.00] | +0.50 [-1.00, +1.00], p 0.50 | "
                   "30.00 [29.00, 31.00] | -0.25 [-1.00, +1.00], p 0.50 |")


def _seed_group(folder: Path, crows: list[float], choices: list[list[int]]) -> Path:
    for s, (score, picks) in enumerate(zip(crows, choices)):
        run = folder / f"seed={s}"
        (run / "items").mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"metrics": {"crows_pairs.pct_stereotype": score}}))
        (run / "items" / "crows_pairs.jsonl").write_text("".join(
            json.dumps({"id": f"crows_pairs:{i}", "bias_type": "gender", "ll_more": -1.0 if c else -2.0,
                        "ll_less": -2.0 if c else -1.0, "choice": c}) + "\n" for i, c in enumerate(picks)))
    return folder


def test_two_seed_groups_from_different_sweeps_get_a_seed_matched_interval_and_pooled_mcnemar(tmp_path):
    mod = _script("seed_group_difference")
    a = _seed_group(tmp_path / "a", [55.0, 54.0, 56.0], [[1, 1, 0, 1]] * 3)
    b = _seed_group(tmp_path / "b", [52.0, 52.0, 53.0, 40.0], [[0, 1, 0, 0]] * 4)   # seed 3 has no partner
    with pytest.raises(ConfigError, match=r"b has \[3\].*--allow-unpaired"):  # issue 35: never dropped silently
        mod.compare_groups(a, b, ["crows_pairs.pct_stereotype"])
    result = mod.compare_groups(a, b, ["crows_pairs.pct_stereotype", "wikitext2.perplexity"], allow_unpaired=True)
    assert result["seeds"] == [0, 1, 2] and result["dropped_seeds"] == {str(b): [3]}
    crows, ppl = result["rows"]
    assert crows["mean_a"] == 55.0 and crows["mean_b"] == 52.0 + 1 / 3 and crows["n"] == 3
    assert crows["mean"] == pytest.approx(-8 / 3) and crows["lo"] < crows["mean"] < crows["hi"]
    assert crows["welch"]["lo"] < crows["mean"] < crows["welch"]["hi"] and 0 < crows["welch"]["p"] < 0.05
    assert ppl == {"metric": "wikitext2.perplexity", "missing": True}
    assert result["pooled_mcnemar"]["crows_pairs"]["a_only"] == 6 and result["pooled_mcnemar"]["crows_pairs"]["b_only"] == 0
    assert "6 pairs preferring the stereotype only under A, 0 only under B" in mod.markdown(result, ("A", "B"))
    with pytest.raises(mod.NotAGroup, match="share 1 seed"):
        mod.compare_groups(a, _seed_group(tmp_path / "c", [50.0], [[1, 1, 1, 1]]), ["crows_pairs.pct_stereotype"])
    with pytest.raises(mod.NotAGroup, match="no finished seed runs"):
        mod.compare_groups(a, tmp_path, ["crows_pairs.pct_stereotype"])


def test_the_parity_criterion_reads_distances_from_parity_not_the_scores(tmp_path):
    """Issue 33: a point whose CrowS-Pairs fell past 50 (distance up by 2) misses; one that brings SS 4 points
    closer to 50 with ICAT +6 on the split by target term, LMS and perplexity kept, meets it."""
    mod = _script("recipe_frontier")
    sweep = _frontier_sweep(tmp_path, {"001_target=2.0": (-3.0, -4.0, -2.0, 0.001, 30.3, 0.5),
                                       "002_target=3.0": (-6.0, -7.0, -5.0, 0.001, 30.9, 0.5)})
    summary = json.loads((sweep / "results.json").read_text())
    parity = {"001_target=2.0": {"stereoset.SS_from_parity": _stat(-4.0, -5.5, -2.5, p=0.004),
                                 "stereoset.ICAT": _stat(6.0, 4.0, 8.0, p=0.003), "stereoset.LMS": _stat(-0.1, -0.5, 0.3, p=0.5),
                                 "crows_pairs.pct_stereotype_from_parity": _stat(0.5, -1.0, 2.0, p=0.4)},
              "002_target=3.0": {"stereoset.SS_from_parity": _stat(-6.0, -7.5, -4.5, p=0.001),
                                 "stereoset.ICAT": _stat(9.0, 7.0, 11.0, p=0.001), "stereoset.LMS": _stat(-4.0, -5, -3, p=0.01),
                                 "crows_pairs.pct_stereotype_from_parity": _stat(2.0, 1.0, 3.0, p=0.01)}}
    for g in summary["groups"]:
        g.setdefault("values", {})["evaluation.stereoset_split_by"] = "target"
        if g["group"] in parity:
            g["vs_reference"]["across_seeds"].update(parity[g["group"]])
    (sweep / "results.json").write_text(json.dumps(summary))
    points = {p.group: p for p in mod.compared_points(sweep)}
    assert all(mod.parity_checks(points["001_target=2.0"]).values())
    missed = [c for c, ok in mod.parity_checks(points["002_target=3.0"]).items() if ok is False]
    assert missed == ["LMS >= −0.5", "CrowS |pct − 50| <= +1", "PPL <= 1.02x"]
    assert mod.parity_verdict(list(points.values())).startswith(f"Meets the parity criterion: {sweep.name} / 001_target=2.0")
    points["001_target=2.0"].split_by = "item"  # the softer hold-out does not count
    assert mod.parity_checks(points["001_target=2.0"])["split by target"] is False
    assert "No point meets the parity criterion" in mod.parity_verdict(list(points.values()))
    assert "| target |" in mod.parity_table(list(points.values())).splitlines()[3]
