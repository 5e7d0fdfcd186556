"""Distance from parity: a bias score is better only down to its ideal (50), so "less biased" needs the
distance |score − 50| to shrink significantly, not the score to fall.  Planted examples, paired bootstrap
intervals of the distance checked against a direct computation, the ICAT verdict, and the seed tables."""
from __future__ import annotations

import numpy as np
import pytest

from fairgptq.audit import verdict_words
from fairgptq.analysis.comparison import compare_items
from fairgptq.evaluation.items import registered_kinds, summarize
from fairgptq.evaluation.report import headline_metrics, main_metric, with_parity
from fairgptq.analysis.seeds import group_statistics
from fairgptq.statistics import NO_PARITY_CHANGE, bootstrap_weights, parity_verdict


def crows(n_stereo: int, n: int = 1000, flip: frozenset[int] = frozenset()) -> list[dict]:
    """n pairs, the first ``n_stereo`` choosing the stereotype; ids fixed so two runs pair item by item."""
    return [{"id": f"p{i}", "bias_type": "gender", "ll_more": -1.0 if i < n_stereo else -2.0,
             "ll_less": -1.5, "choice": int(i < n_stereo)} for i in range(n)]


def rows_by_metric(a: list[dict], b: list[dict], task: str = "crows_pairs", n_boot: int = 2000) -> dict[str, dict]:
    return {r["metric"]: r for r in compare_items(task, a, b, n_boot=n_boot, seed=0)}


def test_every_bias_score_has_its_distance_in_summary_headline_and_direction():
    kind = kind_named("pair_choice")
    assert kind.headline[:2] == ("pct_stereotype", "pct_stereotype_from_parity")
    assert "pct_stereotype_from_parity" in kind.lower_is_better and "pct_stereotype_from_parity" in kind.bias
    summary = summarize(crows(450))
    assert summary["pct_stereotype"] == pytest.approx(45.0)
    assert summary["pct_stereotype_from_parity"] == pytest.approx(5.0)
    assert summary["by_category"]["gender"]["pct_stereotype_from_parity"] == pytest.approx(5.0)
    assert kind_named("stereoset").headline == ("SS", "SS_from_parity", "LMS", "ICAT")
    assert kind_named("preference").headline[:2] == ("pct_prefer_biased", "pct_prefer_biased_from_parity")
    assert main_metric("crows_pairs", "pct_stereotype_from_parity") and not main_metric("crows_pairs", "likelihood_diff")


@pytest.mark.parametrize("n", [1000, 8000])
def test_a_score_at_45_is_not_less_biased_than_one_at_51(n):
    rows = rows_by_metric(crows(51 * n // 100, n), crows(45 * n // 100, n), n_boot=1000)
    score, distance = rows["pct_stereotype"], rows["pct_stereotype_from_parity"]
    assert score["diff"] == pytest.approx(-6.0) and score["verdict"] == "significant"  # the score fell, significantly
    assert distance["diff"] == pytest.approx(4.0)  # |45 − 50| − |51 − 50|: further from parity
    assert verdict_words(score) != "less biased" and verdict_words(distance) != "less biased"
    # 51 % of 1000 pairs is within noise of parity on either side, so the distance's interval is wide
    # (a resample at 49.5 is 0.5 from parity, not −0.5); with 8000 pairs the overshoot is significant
    assert verdict_words(score) == (NO_PARITY_CHANGE if n == 1000 else "more biased")


def test_55_to_51_is_less_biased():
    """On 4000 pairs.  On 1000 the distance's interval reaches 0 ([−5.1, +0.2]): a resample where both models
    sit 3 points lower (52 and 48) has B further from parity, and the bootstrap says so."""
    rows = rows_by_metric(crows(2200, 4000), crows(2040, 4000), n_boot=1000)
    assert rows["pct_stereotype_from_parity"]["diff"] == pytest.approx(-4.0)
    assert rows["pct_stereotype_from_parity"]["verdict"] == "significant"
    assert verdict_words(rows["pct_stereotype"]) == "less biased"
    assert verdict_words(rows["pct_stereotype_from_parity"]) == "less biased"


def test_crossing_parity_by_the_same_distance_is_neither():
    rows = rows_by_metric(crows(550), crows(450))
    assert rows["pct_stereotype"]["verdict"] == "significant"
    assert rows["pct_stereotype_from_parity"]["diff"] == pytest.approx(0.0)
    assert verdict_words(rows["pct_stereotype"]) == NO_PARITY_CHANGE
    assert verdict_words(rows["pct_stereotype_from_parity"]) == "not distinguishable from noise"
    assert parity_verdict(-3.0, "not distinguishable from noise") == "not distinguishable from noise"
    assert parity_verdict(-3.0, "significant") == "less biased"


def test_the_distance_interval_is_the_paired_bootstrap_of_the_distances():
    """Planted: 1000 pairs, A at 53 %, B at 48 % (all of A's flips out of the stereotype); the interval of the
    distance difference equals a direct computation on the same resamples."""
    a, b = crows(530), crows(480)
    row = rows_by_metric(a, b)["pct_stereotype_from_parity"]
    w = bootstrap_weights(1000, 2000, 0)
    ca, cb = np.array([it["choice"] for it in a], float), np.array([it["choice"] for it in b], float)
    boot = np.abs(100 * (w @ cb) / w.sum(1) - 50) - np.abs(100 * (w @ ca) / w.sum(1) - 50)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert row["diff"] == pytest.approx(-1.0)
    assert (row["lo"], row["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert row["lo"] < -1.0 < row["hi"]


def stereoset(ss_share: float, lms_share: float, n_targets: int = 20, per_target: int = 30) -> list[dict]:
    """Items whose SS and LMS are the planted shares in every target term."""
    items = []
    for t in range(n_targets):
        for k in range(per_target):
            stereo_wins = k < round(ss_share * per_target)
            beats_unrelated = k < round(lms_share * per_target)
            items.append({"id": f"t{t}-{k}", "domain": "race", "target": f"term{t}",
                          "stereo": 1.0 if stereo_wins else 0.0, "anti": 0.0 if stereo_wins else 1.0,
                          "unrelated": -1.0 if beats_unrelated else 2.0})
    return items


def test_the_icat_verdict_follows_ss_distance_and_lms():
    base, closer = stereoset(0.7, 0.9), stereoset(0.6, 0.9)
    rows = rows_by_metric(base, closer, "stereoset")
    assert rows["SS_from_parity"]["diff"] == pytest.approx(-10.0)
    assert rows["ICAT"]["a"] == pytest.approx(90 * 30 / 50) and rows["ICAT"]["b"] == pytest.approx(90 * 40 / 50)
    assert verdict_words(rows["ICAT"]) == "better" and verdict_words(rows["SS"]) == "less biased"
    overshoot = rows_by_metric(stereoset(0.55, 0.9), stereoset(0.3, 0.9), "stereoset")
    assert verdict_words(overshoot["SS"]) == "more biased" and verdict_words(overshoot["ICAT"]) == "worse"
    summary = summarize(closer)
    assert summary["ICAT"] == pytest.approx(summary["LMS"] * (50 - summary["SS_from_parity"]) / 50)


def test_recorded_metrics_get_their_distances_and_seed_groups_test_them():
    assert with_parity({"crows_pairs.pct_stereotype": 47.0, "wikitext2.perplexity": 22.0}) == {
        "crows_pairs.pct_stereotype": 47.0, "crows_pairs.pct_stereotype_from_parity": 3.0, "wikitext2.perplexity": 22.0}
    evaluation = {"tasks": {"stereoset": {"SS": 62.0, "LMS": 89.0, "ICAT": 67.6}}}
    assert headline_metrics(evaluation)["stereoset.SS_from_parity"] == pytest.approx(12.0)
    # over seeds: plain at 55, 54, 56; the point at 51, 49, 52 (distances 1, 1, 2): 4 points closer in every seed
    units = []
    for seed, (plain, point) in enumerate([(55.0, 51.0), (54.0, 49.0), (56.0, 52.0)]):
        units.append({"group": "plain", "seed": seed, "plain": True, "values": {}, "metrics":
                      {"crows_pairs.pct_stereotype": plain}})
        d = abs(point - 50) - abs(plain - 50)
        units.append({"group": "point", "seed": seed, "plain": False, "values": {}, "metrics":
                      {"crows_pairs.pct_stereotype": point},
                      "vs_reference": {"reference": f"plain/seed={seed}", "rows": [
                          {"task": "crows_pairs", "metric": "pct_stereotype", "diff": point - plain},
                          {"task": "crows_pairs", "metric": "pct_stereotype_from_parity", "diff": d}]}})
    groups = {g["group"]: g for g in group_statistics(units)}
    assert groups["point"]["metrics"]["crows_pairs.pct_stereotype_from_parity"]["mean"] == pytest.approx(4 / 3)
    across = groups["point"]["vs_reference"]["across_seeds"]
    distance = across["crows_pairs.pct_stereotype_from_parity"]
    assert distance["mean"] == pytest.approx(np.mean([1 - 5, 1 - 4, 2 - 6]))
    assert distance["verdict"] == "significant" and distance["bias_verdict"] == "less biased"
    assert across["crows_pairs.pct_stereotype"]["bias_verdict"] == "less biased"


def kind_named(name: str):
    return next(k for k in registered_kinds() if k.name == name)
