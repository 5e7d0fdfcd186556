"""Forest plot of a repeated-seeds sweep (the same as ``fairgptq report SWEEP --plot PNG --metric-suffix ...``).

    .venv/bin/python scripts/plot_seed_differences.py runs/research/cross_lingual \
        --metric-suffix .pct_stereotype --out docs/research/cross_lingual.png

The plot is :func:`fairgptq.analysis.seed_tables.forest_plot`; this script keeps the commands in
docs/research.md working.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fairgptq.cli import main as cli
from fairgptq.pipeline.rundir import RunDirError, read_sweep_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--metric-suffix", nargs="+", default=[".pct_stereotype"])
    ap.add_argument("--labels", nargs="*", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    read_sweep_summary(args.sweep)  # not a sweep, or one still running: one error line (below), exit 1
    raise SystemExit(cli(["report", str(args.sweep), "--plot", str(args.out), "--metric-suffix", *args.metric_suffix,
                          *(["--labels", *args.labels] if args.labels is not None else [])]))


if __name__ == "__main__":
    try:
        main()
    except RunDirError as e:
        raise SystemExit(f"plot_seed_differences.py: error: {e}")
