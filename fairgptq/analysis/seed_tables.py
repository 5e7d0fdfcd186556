"""A repeated-seeds sweep as research tables and plots: what ``fairgptq report`` and ``compare --groups`` print.

- :func:`difference_table`: per metric, the float model, plain GPTQ's mean over seeds with its 95 %
  t-interval, and each point's mean paired difference from plain GPTQ on the same seeds, with its
  interval and paired-t p (one reference column per plain group: a sweep over H sources has several).
- :func:`category_table`: one pair task's per-category paired differences from the item records.
- :func:`forest_plot`: every point's paired difference per metric, on one axis.
- :func:`compare_groups`: two groups of seed runs (one sweep or two), seed-matched and Welch intervals,
  with McNemar pooled per pair task.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import yaml
from scipy import stats

from .comparison import compare_items
from ..core.errors import ConfigError
from ..evaluation.items import read_items
from ..evaluation.report import headline_metrics, with_parity

from ..statistics import attach_parity_verdicts, paired_t, verdict
from ..run_record import read_run_section
from .seeds import pooled_mcnemar
from .formatting import interval, number
from .plotting import Estimate, Panel, forest_plot as draw


def _interval(s: dict, signed: bool = False) -> str:
    """``mean [lo, hi]``; the mean alone where one seed gives no interval, a dash where nothing was measured."""
    spec = "+.2f" if signed else ".2f"
    if s.get("mean") is not None and (s.get("lo") is None or s.get("hi") is None):
        return f"{number(s['mean'], spec)} (no interval)"
    return interval(s.get("mean"), s.get("lo"), s.get("hi"), spec)


def difference_table(summary: dict, metrics: list[str], labels: list[str] | None,
          plain_labels: list[str] | None = None) -> str:
    """One column per plain group (a sweep over H sources or backends has one per source), each followed
    by the points compared with it: their paired differences from that plain group on the same seeds."""
    plains = [g for g in summary["groups"] if g.get("plain")]
    compared = [g for g in summary["groups"] if "vs_reference" in g]
    if not plains or not compared:
        raise ConfigError("no plain group, or no point compared with it across seeds (a sweep with repeats?)")
    labels = labels or [g["group"] for g in compared]
    if len(labels) != len(compared):
        raise ConfigError(f"{len(labels)} labels for {len(compared)} compared points")
    plain_labels = plain_labels or [g["group"] for g in plains]
    if len(plain_labels) != len(plains):
        raise ConfigError(f"{len(plain_labels)} plain labels for {len(plains)} plain groups")
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
                p = "–" if d is None or d.get("p") is None else f"{d['p']:.2f}"
                cells.append(f"{_interval(d, signed=True)}, p {p}" if d else "–")
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
        raise ConfigError(f"{len(labels)} labels for {len(compared)} compared points")
    @functools.cache
    def shares(point: str) -> dict[str, tuple[float, int]]:  # a plain run is every compared group's reference
        return _shares(read_items(sweep / "points" / point / "items")[task])

    diffs: dict[str, dict[str, list[float]]] = {}  # category -> group -> per-seed differences (points)
    sizes: dict[str, int] = {}
    for g in compared:
        for p in (p for p in points if p["group"] == g["group"]):
            reference = g.get("reference") or next((q["group"] for q in points if q["plain"]), None)
            if (reference, p["seed"]) not in plain:
                raise ConfigError(f"{p['name']}: no plain point {reference} ran seed {p['seed']} to compare it with")
            ref = shares(plain[reference, p["seed"]]["name"])
            own = shares(p["name"])
            for cat, (s, n) in own.items():
                if cat not in ref:
                    raise ConfigError(f"{p['name']} scored {task} category {cat!r}, its plain reference did not: the "
                                      f"two were evaluated on different items, so they cannot be paired")
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


def forest_plot(sweep: Path, summary: dict, suffixes: list[str], labels: list[str] | None, out: Path) -> Path:
    """Each compared point's mean difference from plain GPTQ, per metric ending in one of ``suffixes``."""
    groups = [g for g in summary.get("groups", []) if "vs_reference" in g]
    if not groups:
        raise ConfigError(f"{sweep}: no point compared with plain GPTQ across seeds (a sweep with repeats?)")
    metrics = sorted({m for g in groups for m in g["vs_reference"]["across_seeds"] if m.endswith(tuple(suffixes))})
    if not metrics:
        raise ConfigError(f"{sweep}: no compared metric ends in any of {suffixes}")
    labels = labels or [g["group"] for g in groups]
    single = suffixes[0] if len(suffixes) == 1 else ""
    estimates = [Estimate(m.removesuffix(single), c["mean"], c.get("lo"), c.get("hi"), series=label)
                 for g, label in zip(groups, labels) for m in metrics
                 if (c := g["vs_reference"]["across_seeds"].get(m)) and c.get("mean") is not None]
    xlabel = f"point − plain GPTQ{single} (mean over {len(groups[0]['seeds'])} seeds, 95 % t-interval)"
    return draw([Panel(estimates, xlabel=xlabel)], out)


class NotAGroup(ConfigError):
    """A folder that holds no finished seed runs (``seed=<s>/results.json``)."""


def seed_runs(group: Path) -> dict[int, Path]:
    runs = {}
    for d in group.glob("seed=*"):
        if not (d / "results.json").is_file():
            continue
        try:
            runs[int(d.name.split("=", 1)[1])] = d
        except ValueError:
            raise NotAGroup(f"{d}: not a seed run folder (seed=<whole number>); move it out of {group}") from None
    if not runs:
        raise NotAGroup(f"{group} holds no finished seed runs (seed=<s>/results.json): give a point folder of a "
                        f"sweep with repeats, e.g. runs/<sweep>/points/000_alpha=0.0")
    return runs


def _metrics(run: Path) -> dict[str, float | None]:
    """A run's recorded metrics, with the distances from parity of runs recorded before they were recorded."""
    return with_parity(read_run_section(run, "metrics"))


def compare_groups(a: Path, b: Path, metrics: list[str], *, allow_unpaired: bool = False) -> dict:
    """Per metric the two means and the seed-matched difference; per pair task the pooled McNemar counts.

    Only seeds both groups ran are compared; seeds of one group only are refused unless
    ``allow_unpaired`` (then named in ``dropped``): silently comparing fewer seeds than the user
    asked for changes the interval without a word.
    """
    if a.resolve() == b.resolve():
        raise ConfigError(f"--groups {a} {b}: both are the same group; a group compared with itself says nothing")
    runs_a, runs_b = seed_runs(a), seed_runs(b)
    seeds = sorted(set(runs_a) & set(runs_b))
    dropped = {str(a): sorted(set(runs_a) - set(runs_b)), str(b): sorted(set(runs_b) - set(runs_a))}
    dropped = {k: v for k, v in dropped.items() if v}
    if len(seeds) < 2:
        raise NotAGroup(f"{a} and {b} share {len(seeds)} seed(s); an interval needs at least 2")
    if dropped and not allow_unpaired:
        raise ConfigError("seeds in one group only: " + "; ".join(f"{k} has {v}" for k, v in dropped.items())
                          + f" (both have {seeds}); finish those runs, or pass --allow-unpaired to compare the "
                            f"common seeds only")
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
    attach_parity_verdicts({r["metric"]: r for r in rows if not r.get("missing")})
    item_rows = []
    for s in seeds:
        items_a, items_b = read_items(runs_a[s] / "items"), read_items(runs_b[s] / "items")
        for task in sorted(set(items_a) & set(items_b)):
            item_rows += compare_items(task, items_a[task], items_b[task], n_boot=200)
    return {"groups": [str(a), str(b)], "seeds": seeds, "dropped_seeds": dropped, "rows": rows,
            "pooled_mcnemar": pooled_mcnemar(item_rows)}


def groups_markdown(result: dict, labels: tuple[str, str]) -> str:
    a, b = labels
    n = len(result["seeds"])
    lines = [f"| metric | {a}, mean ({n} seeds) | {b}, mean | {b} − {a}, seed-matched [95 % CI], paired-t p "
             f"| {b} − {a}, unpaired [95 % Welch CI], p |", "|---|---|---|---|---|"]

    def cell(mean: float, lo: float, hi: float, p: float | None, verdict_: str) -> str:
        text = f"{interval(mean, lo, hi, '+.2f')}, p {number(p, '.2g')}"
        return f"**{text}**" if verdict_ == "significant" else text

    for r in result["rows"]:
        if r.get("missing"):
            lines.append(f"| {r['metric']} | – | – | not in both groups' results | – |")
            continue
        w = r["welch"]
        words = f"; {r['bias_verdict']}" if r.get("bias_verdict") else ""
        lines.append(f"| {r['metric']} | {r['mean_a']:.2f} | {r['mean_b']:.2f} | "
                     f"{cell(r['mean'], r['lo'], r['hi'], r['p'], r['verdict'])}{words} | "
                     f"{cell(r['mean'], w['lo'], w['hi'], w['p'], w['verdict'])} |")
    for group, seeds in result.get("dropped_seeds", {}).items():
        lines.append(f"\nSeeds {seeds} of {group} have no partner in the other group and are left out.")
    for task, c in result["pooled_mcnemar"].items():
        lines.append(f"\n{task}, McNemar pooled over seeds {result['seeds']}: {c['a_only']} pairs preferring the "
                     f"stereotype only under {a}, {c['b_only']} only under {b}; p = {c['p']:.2g}")
    return "\n".join(lines)


