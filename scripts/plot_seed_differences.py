"""Forest plot of a repeated-seeds sweep: each point's mean difference from plain GPTQ, per metric.

The sweep's own ``seeds.png`` shows the headline metrics' means; a research question with many
metrics of one kind (CrowS-Pairs in twelve languages, say) wants every point's paired difference
from plain GPTQ on the same seeds, with its 95 % interval across seeds, on one axis.

    .venv/bin/python scripts/plot_seed_differences.py runs/research/cross_lingual \
        --metric-suffix .pct_stereotype --out docs/research/cross_lingual.png
    .venv/bin/python scripts/plot_seed_differences.py runs/research/narrative \
        --metric-suffix .pct_stereotype .pct_prefer_biased .SS --out docs/research/narrative.png

Reads ``results.json`` of a finished sweep with ``repeats`` (its ``groups``); writes one PNG.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fairgptq.pipeline.rundir import RunDirError, read_sweep_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="a finished sweep directory with repeats (its results.json)")
    ap.add_argument("--metric-suffix", nargs="+", default=[".pct_stereotype"],
                    help="plot the metrics ending in any of these (one x axis: use metrics of one unit)")
    ap.add_argument("--labels", nargs="*", default=None, help="one label per compared point, in sweep order")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    summary = read_sweep_summary(args.sweep)
    groups = [g for g in summary.get("groups", []) if "vs_reference" in g]
    if not groups:
        raise SystemExit(f"{args.sweep}: no point compared with plain GPTQ across seeds (a sweep with repeats?)")
    metrics = sorted({m for g in groups for m in g["vs_reference"]["across_seeds"] if m.endswith(tuple(args.metric_suffix))})
    if not metrics:
        raise SystemExit(f"{args.sweep}: no compared metric ends in any of {args.metric_suffix}")
    labels = args.labels or [g["group"] for g in groups]

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(metrics) * len(groups)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    height = 0.8 / len(groups)
    for gi, (g, label) in enumerate(zip(groups, labels)):
        rows = g["vs_reference"]["across_seeds"]
        for mi, m in enumerate(metrics):
            c = rows.get(m)
            if not c or c.get("mean") is None:
                continue
            y = mi + (gi - (len(groups) - 1) / 2) * height
            err = None if c.get("lo") is None else [[c["mean"] - c["lo"]], [c["hi"] - c["mean"]]]
            ax.errorbar(c["mean"], y, xerr=err, fmt="o", ms=4, capsize=2, color=colours[gi % len(colours)],
                        label=label if mi == 0 else None)
    ax.axvline(0, color="k", lw=1)
    single = args.metric_suffix[0] if len(args.metric_suffix) == 1 else ""
    ax.set_yticks(range(len(metrics)), [m.removesuffix(single) for m in metrics], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"point − plain GPTQ{single} (mean over {len(groups[0]['seeds'])} seeds, 95 % t-interval)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except RunDirError as e:  # not a sweep, or one still running: say which, no traceback
        raise SystemExit(f"plot_seed_differences.py: error: {e}")
