"""Markdown table of a repeated-seeds sweep (the same as ``fairgptq report SWEEP --metrics ...``).

    .venv/bin/python scripts/seed_difference_table.py runs/research/narrative \
        --metrics crows_pairs_english.pct_stereotype stereoset.ss wikitext2.perplexity \
        --labels "intrasentence" "intersentence" "RedditBias"

``--by-category TASK`` prints one pair task's per-category paired differences instead.  The tables are
:mod:`fairgptq.analysis.seed_tables`'; this script keeps the commands in docs/research.md working.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fairgptq.pipeline.rundir import RunDirError, read_sweep_summary


def main() -> None:
    from fairgptq.cli import main as cli
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--metrics", nargs="+")
    ap.add_argument("--by-category", metavar="TASK")
    ap.add_argument("--labels", nargs="*", default=None)
    ap.add_argument("--plain-labels", nargs="*", default=None)
    args = ap.parse_args()
    read_sweep_summary(args.sweep)  # not a sweep, or one still running: one error line (below), exit 1
    if not (args.metrics or args.by_category):
        ap.error("give --metrics or --by-category")
    argv = ["report", str(args.sweep), *(["--metrics", *args.metrics] if args.metrics else []),
            *(["--by-category", args.by_category] if args.by_category else []),
            *(["--labels", *args.labels] if args.labels is not None else []),
            *(["--plain-labels", *args.plain_labels] if args.plain_labels is not None else [])]
    raise SystemExit(cli(argv))


if __name__ == "__main__":
    try:
        main()
    except RunDirError as e:
        raise SystemExit(f"seed_difference_table.py: error: {e}")
