"""Two groups of seed runs, from the same sweep or from two, compared over their common seeds: B − A.

A sweep tests each point against plain GPTQ on the same H source.  Some questions compare two
groups that no sweep pairs: plain GPTQ calibrated on the pair sentences in one sweep against plain
GPTQ calibrated on WikiText-2 text in another, or 256 against 1024 calibration pairs.  This prints,
per metric, both groups' means and B − A over the seeds both hold, twice: seed-matched (paired
t-interval and p) and unpaired (Welch's interval and p), and per pair task the McNemar test pooled
over those seeds' pairs.

Seeds are matched by number.  Where both groups draw the same calibration sample for a seed, the
paired test is the right one; where a seed draws different samples in the two groups (another pair
count, another H source), the seed number pairs nothing real and Welch's interval is the one to quote.

    .venv/bin/python scripts/seed_group_difference.py runs/smollm2-seeds/points/000_alpha=0.0 \\
        runs/research/recipe_default/points/000_alpha=0.0 --labels "plain, pairs H" "plain, WikiText-2 H"
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scipy import stats

from fairgptq.comparison import compare_items
from fairgptq.evaluation.items import read_items
from fairgptq.pipeline.seeds import pooled_mcnemar
from fairgptq.statistics import paired_t, verdict


class NotAGroup(Exception):
    """A folder that holds no finished seed runs (``seed=<s>/results.json``)."""


def seed_runs(group: Path) -> dict[int, Path]:
    runs = {int(d.name.split("=", 1)[1]): d for d in group.glob("seed=*") if (d / "results.json").is_file()}
    if not runs:
        raise NotAGroup(f"{group} holds no finished seed runs (seed=<s>/results.json): give a point folder of a "
                        f"sweep with repeats, e.g. runs/<sweep>/points/000_alpha=0.0")
    return runs


def _metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))["metrics"]


def compare_groups(a: Path, b: Path, metrics: list[str]) -> dict:
    """Per metric the two means and the seed-matched difference; per pair task the pooled McNemar counts."""
    runs_a, runs_b = seed_runs(a), seed_runs(b)
    seeds = sorted(set(runs_a) & set(runs_b))
    if len(seeds) < 2:
        raise NotAGroup(f"{a} and {b} share {len(seeds)} seed(s); an interval needs at least 2")
    values_a = [_metrics(runs_a[s]) for s in seeds]
    values_b = [_metrics(runs_b[s]) for s in seeds]
    rows = []
    for m in metrics:
        xa = [v.get(m) for v in values_a]
        xb = [v.get(m) for v in values_b]
        if any(x is None or not math.isfinite(x) for x in xa + xb):
            rows.append({"metric": m, "missing": True})
            continue
        diff = paired_t([y - x for x, y in zip(xa, xb)])
        welch = stats.ttest_ind(xb, xa, equal_var=False)
        ci = welch.confidence_interval(0.95)
        rows.append({"metric": m, "mean_a": sum(xa) / len(xa), "mean_b": sum(xb) / len(xb), **diff,
                     "verdict": verdict(diff["p"], diff["lo"], diff["hi"]),
                     "welch": {"lo": float(ci.low), "hi": float(ci.high), "p": float(welch.pvalue),
                               "verdict": verdict(float(welch.pvalue), float(ci.low), float(ci.high))}})
    item_rows = []
    for s in seeds:
        items_a, items_b = read_items(runs_a[s] / "items"), read_items(runs_b[s] / "items")
        for task in sorted(set(items_a) & set(items_b)):
            item_rows += compare_items(task, items_a[task], items_b[task], n_boot=200)
    return {"seeds": seeds, "rows": rows, "pooled_mcnemar": pooled_mcnemar(item_rows)}


def markdown(result: dict, labels: tuple[str, str]) -> str:
    a, b = labels
    n = len(result["seeds"])
    lines = [f"| metric | {a}, mean ({n} seeds) | {b}, mean | {b} − {a}, seed-matched [95 % CI], paired-t p "
             f"| {b} − {a}, unpaired [95 % Welch CI], p |", "|---|---|---|---|---|"]

    def cell(mean: float, lo: float, hi: float, p: float | None, verdict_: str) -> str:
        text = f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}], p {'–' if p is None or math.isnan(p) else f'{p:.2g}'}"
        return f"**{text}**" if verdict_ == "significant" else text

    for r in result["rows"]:
        if r.get("missing"):
            lines.append(f"| {r['metric']} | – | – | not in both groups' results | – |")
            continue
        w = r["welch"]
        lines.append(f"| {r['metric']} | {r['mean_a']:.2f} | {r['mean_b']:.2f} | "
                     f"{cell(r['mean'], r['lo'], r['hi'], r['p'], r['verdict'])} | "
                     f"{cell(r['mean'], w['lo'], w['hi'], w['p'], w['verdict'])} |")
    for task, c in result["pooled_mcnemar"].items():
        lines.append(f"\n{task}, McNemar pooled over seeds {result['seeds']}: {c['a_only']} pairs preferring the "
                     f"stereotype only under {a}, {c['b_only']} only under {b}; p = {c['p']:.2g}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="point folder of the reference group (holding seed=<s>/)")
    ap.add_argument("b", type=Path, help="point folder of the compared group")
    ap.add_argument("--metrics", nargs="+", default=["crows_pairs.pct_stereotype", "wikitext2.perplexity"])
    ap.add_argument("--labels", nargs=2, default=("A", "B"))
    args = ap.parse_args()
    try:
        result = compare_groups(args.a, args.b, args.metrics)
    except NotAGroup as e:
        ap.exit(2, f"seed_group_difference.py: error: {e}\n")
    print(markdown(result, tuple(args.labels)))


if __name__ == "__main__":
    main()
