"""Paired statistics: McNemar equals scipy on constructed tables, bootstrap intervals cover known differences,
identical runs give 0 and p = 1, mismatched inputs are clear errors, across-seed intervals are Student-t."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from fairgptq import cli
from fairgptq.analysis.comparison import compare_items, compare_runs, load_run, markdown, write_outputs
from fairgptq.core.errors import ConfigError
from fairgptq.evaluation.items import summarize, write_items
from fairgptq.evaluation.items import registered_kinds
from fairgptq.statistics import bootstrap_weights, mcnemar, paired_bootstrap, paired_t, t_interval


def crows_items(choices, offset=0.0):
    return [{"id": f"p{i}", "bias_type": "gender" if i % 3 else "age", "ll_more": -10.0 + c + offset,
             "ll_less": -10.0 + 0.5, "choice": int(c)} for i, c in enumerate(choices)]


@pytest.mark.parametrize("a_only,b_only,both,neither", [(10, 3, 40, 47), (0, 0, 5, 5), (7, 7, 1, 2), (25, 9, 0, 0)])
def test_mcnemar_equals_scipy_exact_binomial(a_only, b_only, both, neither):
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    m = mcnemar(a, b)
    assert (m.a_only, m.b_only) == (a_only, b_only)
    n = a_only + b_only
    expected = 1.0 if n == 0 else stats.binomtest(b_only, n, 0.5).pvalue
    assert m.p == pytest.approx(expected, rel=1e-12)


def test_mcnemar_refuses_unpaired_outcomes():
    with pytest.raises(ConfigError, match="equal length"):
        mcnemar([1, 0], [1])


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(7)
    n = 2000
    a = rng.binomial(1, 0.55, n)
    flip = rng.random(n) < 0.10  # B changes a tenth of the choices, mostly away from stereotype
    b = np.where(flip, rng.binomial(1, 0.2, n), a)
    fa = kind_named("pair_choice").resampled(crows_items(a))
    fb = kind_named("pair_choice").resampled(crows_items(b))
    diff, lo, hi, p = paired_bootstrap(fa["pct_stereotype"], fb["pct_stereotype"], bootstrap_weights(n, 2000, 0))
    assert diff == pytest.approx(100 * (b.mean() - a.mean()))
    assert lo < diff < hi and hi < 0 and p < 0.01
    # the interval is the paired one: far narrower than two independent samples' would be
    independent_se = 100 * math.sqrt(2 * 0.25 / n)
    assert (hi - lo) < 2 * 1.96 * independent_se * 0.6


def test_bootstrap_coverage_over_many_draws():
    """A 95 % interval should cover the true difference in about 95 % of repeated experiments."""
    rng = np.random.default_rng(3)
    covered = 0
    trials = 60
    for t in range(trials):
        n = 400
        a = rng.binomial(1, 0.5, n)
        b = np.where(rng.random(n) < 0.2, 1, a)  # true difference: 0.2 * P(a = 0) = 10 points
        fa = kind_named("pair_choice").resampled(crows_items(a))
        fb = kind_named("pair_choice").resampled(crows_items(b))
        _, lo, hi, _ = paired_bootstrap(fa["pct_stereotype"], fb["pct_stereotype"], bootstrap_weights(n, 500, t))
        covered += lo <= 10.0 <= hi
    assert covered / trials >= 0.85


def test_identical_runs_give_zero_and_p_one():
    items = crows_items([1, 0, 1, 1, 0, 0, 1] * 20)
    rows = compare_items("crows_pairs", items, items, n_boot=300)
    for r in rows:
        assert r["diff"] == 0 and r["p"] == 1.0 and r["verdict"] == "not distinguishable from noise"


def test_same_seed_same_numbers_and_seed_changes_only_the_interval():
    a = crows_items([1, 0] * 100)
    b = crows_items([1, 1] * 100)
    r1 = compare_items("crows_pairs", a, b, n_boot=500, seed=1)
    r2 = compare_items("crows_pairs", a, b, n_boot=500, seed=1)
    r3 = compare_items("crows_pairs", a, b, n_boot=500, seed=2)
    assert r1 == r2
    assert r1[0]["diff"] == r3[0]["diff"] == 50.0 and r1[0]["p"] == r3[0]["p"]  # McNemar p: no resampling


def test_mismatched_item_sets_and_kinds_are_clear_errors():
    a = crows_items([1, 0, 1])
    with pytest.raises(ConfigError, match="different item sets"):
        compare_items("crows_pairs", a, a[:2])
    wiki = [{"id": "p0", "nll": 3.0, "tokens": 10}, {"id": "p1", "nll": 3.0, "tokens": 10},
            {"id": "p2", "nll": 3.0, "tokens": 10}]
    with pytest.raises(ConfigError, match="different kinds"):
        compare_items("crows_pairs", a, wiki)


def test_every_metric_function_at_unit_weights_equals_the_summary():
    rng = np.random.default_rng(0)
    stereo = [{"id": f"s{i}", "domain": ("gender", "race")[i % 2], "target": f"t{i % 7}",
               "stereo": float(rng.normal()), "anti": float(rng.normal()), "unrelated": float(rng.normal() - 1)}
              for i in range(80)]
    mc = [{"id": f"m{i}", "correct": int(rng.random() < 0.6), "correct_norm": int(rng.random() < 0.5)}
          for i in range(50)]
    win = [{"id": f"w{i}", "nll": float(rng.uniform(2000, 3000)), "tokens": 1023} for i in range(8)]
    crows = crows_items(rng.binomial(1, 0.55, 90))
    for items in (stereo, mc, win, crows):
        kind = {"stereo": "stereoset", "correct": "multiple_choice", "nll": "windows", "choice": "pair_choice"}
        kind = next(v for k, v in kind.items() if k in items[0])
        summary = summarize(items)
        for metric, fn in kind_named(kind).resampled(items).items():
            assert float(fn(np.ones((1, len(items))))[0]) == pytest.approx(summary[metric], rel=1e-12)


def test_t_interval_and_paired_t():
    v = [54.31, 53.58, 55.37, 54.9, 53.9]
    s = t_interval(v)
    half = stats.t.ppf(0.975, 4) * np.std(v, ddof=1) / math.sqrt(5)
    assert s["mean"] == pytest.approx(np.mean(v)) and s["hi"] - s["mean"] == pytest.approx(half)
    d = paired_t([0.4, 1.06, -1.13])
    assert d["p"] == pytest.approx(stats.ttest_1samp([0.4, 1.06, -1.13], 0).pvalue)
    assert paired_t([0.0, 0.0])["p"] == 1.0
    assert t_interval([3.0])["lo"] is None


def _run_dir(root, name, items_by_task):
    folder = root / name
    write_items(folder / "items", items_by_task)
    (folder / "results.json").write_text(json.dumps({"metrics": {}}))
    return folder


def test_compare_command_writes_table_markdown_json_and_forest_plot(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = crows_items(rng.binomial(1, 0.56, 300))
    moved = [dict(it, choice=0, ll_more=it["ll_less"] - 1) if i % 9 == 0 else it for i, it in enumerate(base)]
    wiki = [{"id": f"w{i}", "nll": 2500.0 + i, "tokens": 1023} for i in range(6)]
    a = _run_dir(tmp_path, "plain", {"crows_pairs": base, "wikitext2": wiki})
    b = _run_dir(tmp_path, "fair", {"crows_pairs": moved, "wikitext2": wiki})
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(b), "--baseline", str(a), "--out", str(out), "--bootstrap", "300"]) == 0
    text = capsys.readouterr().out
    assert "paired comparison against plain" in text
    result = json.loads((out / "compare.json").read_text())
    row = next(r for r in result["comparisons"][0]["rows"] if r["metric"] == "pct_stereotype")
    assert row["discordant"]["b_only"] == 0 and row["diff"] < 0 and row["p"] < 0.05
    md = (out / "compare.md").read_text()
    assert "crows_pairs.pct_stereotype: fair − baseline = " in md and ", significant" in md
    assert (out / "forest.png").stat().st_size > 1000
    # pct_stereotype, its distance from parity, likelihood_diff
    assert markdown(result).count("| crows_pairs |") == 3


def test_compare_refuses_runs_without_shared_tasks_or_items(tmp_path, capsys):
    a = _run_dir(tmp_path, "a", {"crows_pairs": crows_items([1, 0])})
    b = _run_dir(tmp_path, "b", {"piqa": [{"id": "x", "correct": 1, "correct_norm": 0}]})
    assert cli.main(["compare", str(b), "--baseline", str(a)]) == 2
    assert "share no evaluation task" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", str(tmp_path / "empty"), "--baseline", str(a)]) == 2
    assert "no per-item records" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path / "nope"), "--baseline", str(a)]) == 2


def test_eval_json_output_is_comparable(tmp_path):
    """`fairgptq eval --out x.json` keeps its items in x_items/, which compare reads."""
    folder = tmp_path / "x_items"
    write_items(folder, {"crows_pairs": crows_items([1, 0, 1])})
    (tmp_path / "x.json").write_text(json.dumps({"tasks": {}}))
    run = load_run(tmp_path / "x.json")
    assert run.items["crows_pairs"][0]["id"] == "p0"
    result = compare_runs(run, [run], n_boot=200)
    assert all(r["diff"] == 0 for r in result["comparisons"][0]["rows"])
    assert write_outputs(result, tmp_path / "o")[0].is_file()


def kind_named(name: str):
    return next(k for k in registered_kinds() if k.name == name)

