"""Markdown table of a repeated-seeds sweep: float, plain GPTQ, and each point's paired difference from it.

A research question's answer is a table of means with intervals, not one run: per metric, the
float model, plain GPTQ's mean over seeds with its 95 % t-interval, and each Fair-GPTQ point's
mean paired difference from plain GPTQ on the same seeds, with its interval and paired-t p.

    .venv/bin/python scripts/seed_difference_table.py runs/research/narrative \
        --metrics crows_pairs_english.pct_stereotype stereoset.ss wikitext2.perplexity \
        --labels "intrasentence" "intersentence" "RedditBias"

``--by-category TASK`` prints instead, for one pair task, each category's paired difference from
plain GPTQ (share of pairs preferring the stereotype; per seed from the item records, then a
paired t-interval across seeds): CrowS-Pairs bias types, for instance.

Reads ``results.json`` of a finished sweep with ``repeats`` (its ``groups``); prints Markdown.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import yaml

from fairgptq.evaluation.items import item_tasks, read_items
from fairgptq.pipeline.report import headline_metrics
from fairgptq.pipeline.rundir import RunDirError, read_sweep_summary
from fairgptq.statistics import paired_t


def _interval(s: dict, signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return f"{fmt.format(s['mean'])} [{fmt.format(s['lo'])}, {fmt.format(s['hi'])}]"


def table(summary: dict, metrics: list[str], labels: list[str] | None,
          plain_labels: list[str] | None = None) -> str:
    """One column per plain group (a sweep over H sources or backends has one per source), each followed
    by the points compared with it: their paired differences from that plain group on the same seeds."""
    plains = [g for g in summary["groups"] if g.get("plain")]
    compared = [g for g in summary["groups"] if "vs_reference" in g]
    if not plains or not compared:
        raise SystemExit("no plain group, or no point compared with it across seeds (a sweep with repeats?)")
    labels = labels or [g["group"] for g in compared]
    if len(labels) != len(compared):
        raise SystemExit(f"{len(labels)} labels for {len(compared)} compared points")
    plain_labels = plain_labels or [g["group"] for g in plains]
    if len(plain_labels) != len(plains):
        raise SystemExit(f"{len(plain_labels)} plain labels for {len(plains)} plain groups")
    label_of = {g["group"]: label for g, label in zip(compared, labels)}
    columns: list[tuple[str, dict]] = []  # (header, group), plain first then the points compared with it
    for plain, plain_label in zip(plains, plain_labels):
        who = "" if len(plains) == 1 else f" ({plain_label})"
        columns.append((f"plain GPTQ{who}, mean [95 % CI] (n {len(plain['seeds'])} seeds)", plain))
        columns += [(f"{label_of[g['group']]} − plain", g) for g in compared
                    if g.get("reference", plains[0]["group"]) == plain["group"]]
    floats = headline_metrics(summary.get("baseline"))
    head = ["metric", "float"] + [h for h, _ in columns]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics:
        cells = [m, f"{floats[m]:.2f}" if m in floats else "–"]
        for _, g in columns:
            if g.get("plain"):
                cells.append(_interval(g["metrics"][m]) if m in g["metrics"] else "–")
            else:
                d = g["vs_reference"]["across_seeds"].get(m)
                cells.append(f"{_interval(d, signed=True)}, p {d['p']:.2f}" if d else "–")
        rows.append("| " + " | ".join(cells) + " |")
    seconds = _seconds(summary)
    if all(g["group"] in seconds for _, g in columns):  # quantization + evaluation of one run, as timed
        rows.append("| " + " | ".join(["time per run (s)", "–"] + [f"{seconds[g['group']]:.0f}" for _, g in columns])
                    + " |")
    return "\n".join(rows)


def _seconds(summary: dict) -> dict[str, float]:
    """Mean wall time per run of each group, from the points' timings."""
    out: dict[str, list[float]] = {}
    for p in summary.get("points", []):
        if p.get("seconds") is not None:
            out.setdefault(p["group"], []).append(p["seconds"])
    return {g: sum(v) / len(v) for g, v in out.items()}


def _shares(items: list[dict]) -> dict[str, tuple[float, int]]:
    """Per category: (sum of choices, count); ``choice`` 1 = the stereotypical side preferred."""
    out: dict[str, tuple[float, int]] = {}
    for it in items:
        cat = it.get("bias_type") or it.get("category") or "all"
        s, n = out.get(cat, (0.0, 0))
        out[cat] = (s + float(it["choice"]), n + 1)
    return out


def _scored_pairs(sweep: Path, point: str) -> str:
    """Which pairs the sweep scored: its evaluation's ``pair_split`` (all pairs unless set)."""
    config = yaml.safe_load((sweep / "points" / point / "config.yaml").read_text(encoding="utf-8"))
    split = (config.get("evaluation") or {}).get("pair_split", "all")
    return "held-out pairs" if split == "holdout" else f"{split} pairs"


def category_table(sweep: Path, summary: dict, task: str, labels: list[str] | None) -> str:
    points = summary["points"]
    # a point's reference is its group's plain group on the same seed (a sweep over H sources or pair
    # counts has one plain group per source or count)
    plain = {(p["group"], p["seed"]): p for p in points if p["plain"]}
    compared = [g for g in summary["groups"] if "vs_reference" in g]
    labels = labels or [g["group"] for g in compared]
    if len(labels) != len(compared):
        raise SystemExit(f"{len(labels)} labels for {len(compared)} compared points")
    @functools.cache
    def shares(point: str) -> dict[str, tuple[float, int]]:  # a plain run is every compared group's reference
        return _shares(read_items(sweep / "points" / point / "items")[task])

    diffs: dict[str, dict[str, list[float]]] = {}  # category -> group -> per-seed differences (points)
    sizes: dict[str, int] = {}
    for g in compared:
        for p in (p for p in points if p["group"] == g["group"]):
            ref = shares(plain[g["reference"], p["seed"]]["name"])
            own = shares(p["name"])
            for cat, (s, n) in own.items():
                diffs.setdefault(cat, {}).setdefault(g["group"], []).append(100 * (s - ref[cat][0]) / n)
                sizes[cat] = n
    head = [f"{task} category ({_scored_pairs(sweep, points[0]['name'])})"] + [f"{label} − plain" for label in labels]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cat in sorted(diffs):
        cells = [f"{cat} (n {sizes[cat]})"]
        for g in compared:
            c = paired_t(diffs[cat].get(g["group"], []))
            if c.get("p") is not None:
                cells.append(f"{_interval(c, signed=True)}, p {c['p']:.2f}")
            else:  # no spread across seeds (or one seed): no interval to give
                cells.append("–" if c.get("mean") is None else f"{c['mean']:+.2f} in every seed")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="a finished sweep directory with repeats (its results.json)")
    ap.add_argument("--metrics", nargs="+", help="task.metric names, one row each")
    ap.add_argument("--by-category", metavar="TASK", help="per-category paired differences of one pair task")
    ap.add_argument("--labels", nargs="*", default=None, help="one label per compared point, in sweep order")
    ap.add_argument("--plain-labels", nargs="*", default=None,
                    help="one label per plain group, where a sweep has several (one per H source, say)")
    args = ap.parse_args()
    summary = read_sweep_summary(args.sweep)
    if args.by_category:
        tasks = item_tasks(args.sweep / "points" / summary["points"][0]["name"] / "items")
        if args.by_category not in tasks:
            ap.error(f"--by-category {args.by_category}: the sweep's points have no item records of that task; "
                     f"they have {', '.join(tasks) or 'none'}")
        print(category_table(args.sweep, summary, args.by_category, args.labels))
    elif args.metrics:
        print(table(summary, args.metrics, args.labels, args.plain_labels))
    else:
        ap.error("give --metrics or --by-category")


if __name__ == "__main__":
    try:
        main()
    except RunDirError as e:  # not a sweep, or one still running: say which, no traceback
        raise SystemExit(f"seed_difference_table.py: error: {e}")
