"""How much of CrowS-Pairs' preference the fairness term can reach: span part against continuation part.

In a causal LM both sentences of a pair have identical activations over their shared prefix, so the
pair difference D that Fair-GPTQ's term shrinks is exactly 0 at the positions that predict the
differing span: the term can only act on the continuation after the span.  This prints, for the
``crows_pairs_decomposed`` item records of each run folder given (the float model, plain GPTQ, a
Fair-GPTQ point), the share of pairs preferring the stereotype on the total, the span part alone and
the continuation part alone, and the pairs whose preference the continuation decides (its sign
differs from the span part's and wins).

    .venv/bin/python scripts/crows_reach.py runs/research/recipe_reach/float \
        runs/research/recipe_reach/points/000_alpha=0.0/seed=0
    .venv/bin/python scripts/crows_reach.py --sweep runs/research/recipe_reach   # float + each point's seed mean
"""
from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean

from fairgptq.evaluation.items import read_items


def reach(items: list[dict]) -> dict[str, float]:
    span = [it["span_more"] - it["span_less"] for it in items]
    rest = [it["rest_more"] - it["rest_less"] for it in items]
    total = [a + b for a, b in zip(span, rest)]
    n = len(items)
    return {"n": n,
            "pct_stereotype": 100 * sum(t > 0 for t in total) / n,
            "pct_span_only": 100 * sum(a > 0 for a in span) / n,
            "pct_continuation_only": 100 * sum(b > 0 for b in rest) / n,
            "pct_decided_by_continuation": 100 * sum((a > 0) != (t > 0) for a, t in zip(span, total)) / n,
            "continuation_share": sum(map(abs, rest)) / (sum(map(abs, span)) + sum(map(abs, rest)))}


class NoDecomposition(Exception):
    """A run folder without the span/continuation records this script reads."""


def _of(run: Path) -> dict[str, float]:
    items = read_items(run / "items") if (run / "items").is_dir() else {}
    if "crows_pairs_decomposed" not in items:
        raise NoDecomposition(
            f"{run} has no items/crows_pairs_decomposed records: it was not evaluated with the "
            f"crows_pairs_decomposed task. Add it to the pipeline's evaluation.tasks (as "
            f"pipelines/research/recipe_reach.yaml does) and rerun, or give a run that has it")
    return reach(items["crows_pairs_decomposed"])


def sweep_rows(sweep: Path) -> list[tuple[str, dict[str, float]]]:
    """The float model, then each point's mean over its seeds (folders points/<point>/seed=<s>)."""
    rows = [("float model", _of(sweep / "float"))] if (sweep / "float" / "items").is_dir() else []
    for point in sorted(p for p in (sweep / "points").iterdir() if p.is_dir()):
        seeds = [_of(s) for s in sorted(point.glob("seed=*"))]
        if seeds:
            rows.append((f"{point.name} (mean of {len(seeds)} seeds)", {k: fmean(s[k] for s in seeds) for k in seeds[0]}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="*", help="run folders holding items/crows_pairs_decomposed.jsonl")
    ap.add_argument("--sweep", type=Path, help="a sweep with repeats: the float model and each point's seed mean")
    args = ap.parse_args()
    try:
        rows = [(str(r), _of(r)) for r in args.runs] + (sweep_rows(args.sweep) if args.sweep else [])
    except NoDecomposition as e:
        ap.exit(2, f"crows_reach.py: error: {e}\n")
    if not rows:
        ap.error("give run folders or --sweep")
    head = ["run", "pairs", "% stereotype (total)", "% span part alone", "% continuation part alone",
            "% decided by the continuation", "continuation share of |difference|"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in rows:
        print(f"| {name} | {r['n']:.0f} | {r['pct_stereotype']:.2f} | {r['pct_span_only']:.2f} | "
              f"{r['pct_continuation_only']:.2f} | {r['pct_decided_by_continuation']:.2f} | {r['continuation_share']:.3f} |")


if __name__ == "__main__":
    main()
