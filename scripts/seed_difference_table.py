"""Markdown table of a repeated-seeds sweep: float, plain GPTQ, and each point's paired difference from it.

A research question's answer is a table of means with intervals, not one run: per metric, the
float model, plain GPTQ's mean over seeds with its 95 % t-interval, and each Fair-GPTQ point's
mean paired difference from plain GPTQ on the same seeds, with its interval and paired-t p.

    .venv/bin/python scripts/seed_difference_table.py runs/research/narrative \
        --metrics crows_pairs_english.pct_stereotype stereoset.ss wikitext2.perplexity \
        --labels "intrasentence" "intersentence" "RedditBias"

Reads ``results.json`` of a finished sweep with ``repeats`` (its ``groups``); prints Markdown.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fairgptq.pipeline.report import headline_metrics


def _interval(s: dict, signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return f"{fmt.format(s['mean'])} [{fmt.format(s['lo'])}, {fmt.format(s['hi'])}]"


def table(summary: dict, metrics: list[str], labels: list[str] | None) -> str:
    plain = next((g for g in summary["groups"] if g.get("plain")), None)
    compared = [g for g in summary["groups"] if "vs_reference" in g]
    if plain is None or not compared:
        raise SystemExit("no plain group, or no point compared with it across seeds (a sweep with repeats?)")
    labels = labels or [g["group"] for g in compared]
    if len(labels) != len(compared):
        raise SystemExit(f"{len(labels)} labels for {len(compared)} compared points")
    floats = headline_metrics(summary.get("baseline"))
    head = ["metric", "float", f"plain GPTQ, mean [95 % CI] (n {len(plain['seeds'])} seeds)"]
    head += [f"{label} − plain" for label in labels]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics:
        cells = [m, f"{floats[m]:.2f}" if m in floats else "–",
                 _interval(plain["metrics"][m]) if m in plain["metrics"] else "–"]
        for g in compared:
            d = g["vs_reference"]["across_seeds"].get(m)
            cells.append(f"{_interval(d, signed=True)}, p {d['p']:.2f}" if d else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="a finished sweep directory with repeats (its results.json)")
    ap.add_argument("--metrics", nargs="+", required=True, help="task.metric names, one row each")
    ap.add_argument("--labels", nargs="*", default=None, help="one label per compared point, in sweep order")
    args = ap.parse_args()
    print(table(json.loads((args.sweep / "results.json").read_text()), args.metrics, args.labels))


if __name__ == "__main__":
    main()
