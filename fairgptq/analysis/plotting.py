"""The one way a report draws: matplotlib on its file-only backend (Agg), imported when a plot is asked for.

Importing matplotlib is slow and needs no display here, so every plot function asks :func:`pyplot`
instead of importing it at module level.  Every interval plot of the reports (a comparison's
differences, a sweep's seed means, its paired differences) is one :func:`forest_plot` of
:class:`Panel` s of :class:`Estimate` s; the callers only say what to draw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from ..outputs import save_figure


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed; plots are written to files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


@dataclass(frozen=True)
class Estimate:
    """One point with its interval on a forest plot: a row label, the value, and ``series`` when several
    estimates share a row (each series gets its own offset, colour and legend entry)."""

    row: str
    value: float
    lo: float | None = None
    hi: float | None = None
    colour: str | None = None
    series: str | None = None


@dataclass(frozen=True)
class Panel:
    """One axis of a forest plot: its estimates, a reference line (0 for differences, the ideal value of a
    bias score drawn as a band), a title and an x label."""

    estimates: Sequence[Estimate]
    title: str = ""
    xlabel: str = ""
    reference: float | None = 0.0
    band: bool = False


def forest_plot(panels: Sequence[Panel], path: Path, *, side_by_side: bool = False) -> Path | None:
    """Every forest plot of the reports: estimates with their intervals, one row per label, panels stacked
    (or ``side_by_side``); None when there is nothing to draw."""
    panels = [p for p in panels if p.estimates]
    if not panels:
        return None
    plt = pyplot()
    rows_of = [list(dict.fromkeys(e.row for e in p.estimates)) for p in panels]
    if side_by_side:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.9 + 0.4 * max(map(len, rows_of))),
                                 squeeze=False)
        axes = axes[0]
    else:
        fig, axes = plt.subplots(len(panels), 1, figsize=(7, 0.9 + 0.4 * sum(map(len, rows_of))), squeeze=False)
        axes = axes[:, 0]
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel, rows in zip(axes, panels, rows_of):
        series = list(dict.fromkeys(e.series for e in panel.estimates))
        height = 0.8 / len(series)
        labelled: set[str | None] = set()
        for e in panel.estimates:
            k = series.index(e.series)
            y = rows.index(e.row) + (k - (len(series) - 1) / 2) * height
            err = None if e.lo is None else [[e.value - e.lo], [e.hi - e.value]]
            ax.errorbar(e.value, y, xerr=err, fmt="o", ms=4, capsize=3, color=e.colour or cycle[k % len(cycle)],
                        label=e.series if e.series is not None and e.series not in labelled else None)
            labelled.add(e.series)
        if panel.reference is not None:
            if panel.band:
                ax.axvline(panel.reference, color="grey", lw=3, alpha=0.3)
            else:
                ax.axvline(panel.reference, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), rows, fontsize=7 if side_by_side else 8)
        ax.invert_yaxis()
        ax.set_title(panel.title, fontsize=8)
        ax.set_xlabel(panel.xlabel, fontsize=8)
        ax.grid(alpha=0.3, axis="x")
        if any(s is not None for s in series):
            ax.legend(fontsize=7, loc="best")
        if not math.isclose(*ax.get_xlim()):
            ax.margins(x=0.1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)  # whole, with the run files' mode (fairgptq.outputs)
    plt.close(fig)
    return path
