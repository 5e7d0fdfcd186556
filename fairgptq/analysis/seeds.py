"""A sweep's statistics: each point against its plain-GPTQ reference, and every point across seeds.

The reference of a point is the *plain* point (every objective's term is off, as its settings
model says, or no objective)
that shares its seed and every swept value outside ``objectives`` — the natural pair, since
it saw the same calibration sample and differs only by the fairness term.  Each unit is
compared with it item by item (McNemar / paired bootstrap, :mod:`fairgptq.analysis.comparison`);
with repeats, every metric gets mean, SD and a t-interval across seeds, and the per-seed
differences from the reference a paired t-interval, plus McNemar per pair task pooled over
all seeds' pairs (which treats seeds' pairs as independent draws: say so where it is quoted;
tasks are never pooled with each other, since their pairs are different tests).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from scipy import stats

from .comparison import compare_items, pair_gap_rows
from ..evaluation.items import read_items
from ..evaluation.report import ideal_value, is_bias_metric, lower_is_better, main_metric, with_parity
from ..statistics import attach_parity_verdicts, paired_t, t_interval, verdict
from ..run_record import read_run_section
from .formatting import interval
from .plotting import Estimate, Panel, forest_plot as draw


def _shared_values(unit: dict) -> dict:
    return {k: v for k, v in unit["values"].items() if not k.startswith("objectives")}


def reference_of(unit: dict, units: list[dict]) -> dict | None:
    """The unique plain unit with the same seed and the same non-objective values (None if 0 or > 1)."""
    if unit["plain"]:
        return None
    found = [u for u in units if u["plain"] and u["seed"] == unit["seed"] and _shared_values(u) == _shared_values(unit)]
    return found[0] if len(found) == 1 else None


def _items(unit_dir: Path) -> dict[str, list[dict]]:
    """A unit's item records; none when the pipeline evaluates no task."""
    return read_items(unit_dir / "items") if (unit_dir / "items").is_dir() else {}


def unit_comparisons(units: list[dict], folder: Path, *, n_boot: int = 2000) -> None:
    """Add ``vs_reference`` (rows per metric, pair gap on the unit's targeted modules) to each unit."""
    for unit in units:
        ref = reference_of(unit, units)
        if ref is None:
            continue
        a_dir, b_dir = folder / "points" / ref["name"], folder / "points" / unit["name"]
        a_items, b_items = _items(a_dir), _items(b_dir)
        rows = [row for t in a_items if t in b_items
                for row in compare_items(t, a_items[t], b_items[t], n_boot=n_boot, labels=(ref["name"], unit["name"]))]
        rows += pair_gap_rows(read_run_section(a_dir, "pair_gap"), read_run_section(b_dir, "pair_gap"),
                              "no test (one seed)")
        unit["vs_reference"] = {"reference": ref["name"], "rows": rows}


def pooled_mcnemar(rows: Iterable[dict]) -> dict[str, dict]:
    """Per pair task: the comparison rows' McNemar discordant pairs summed over seeds, and the exact p.

    Pooling treats every seed's pairs as independent draws (say so where it is quoted); tasks are
    never pooled with each other, since their pairs are different tests.
    """
    pooled: dict[str, dict] = {}
    for r in rows:
        if "discordant" in r:
            counts = pooled.setdefault(r["task"], {"a_only": 0, "b_only": 0})
            counts["a_only"] += r["discordant"]["a_only"]
            counts["b_only"] += r["discordant"]["b_only"]
    for counts in pooled.values():
        n = counts["a_only"] + counts["b_only"]
        counts["p"] = 1.0 if n == 0 else float(stats.binomtest(counts["b_only"], n, 0.5).pvalue)
    return pooled


def group_statistics(units: list[dict]) -> list[dict]:
    """Per point (group of seeds): t-intervals of every metric, and the paired comparison with the reference."""
    groups: dict[str, list[dict]] = {}
    for u in units:
        groups.setdefault(u["group"], []).append(u)
    out = []
    for name, members in groups.items():
        # distances from parity too, for runs recorded before they were headline metrics
        member_metrics = [with_parity(u["metrics"]) for u in members]
        metric_names = sorted({m for mm in member_metrics for m in mm})
        entry = {"group": name, "values": {k: v for k, v in members[0]["values"].items() if k != "seed"},
                 "plain": members[0]["plain"], "seeds": [u["seed"] for u in members],
                 "metrics": {m: t_interval([mm.get(m) for mm in member_metrics]) for m in metric_names}}
        with_ref = [u for u in members if "vs_reference" in u]
        if with_ref:
            entry["reference"] = with_ref[0]["vs_reference"]["reference"].split("/")[0]
            rows = [r for u in with_ref for r in u["vs_reference"]["rows"]]
            diffs: dict[str, list[float]] = {}
            for r in rows:
                diffs.setdefault(f"{r['task']}.{r['metric']}", []).append(r["diff"])
            comparison = {}
            for metric, values in diffs.items():
                c = paired_t(values)
                c["verdict"] = verdict(c["p"], c["lo"], c["hi"])
                comparison[metric] = c
            attach_parity_verdicts(comparison)
            entry["vs_reference"] = {"across_seeds": comparison, "pooled_mcnemar": pooled_mcnemar(rows)}
        out.append(entry)
    return out


def units_report(units: list[dict]) -> str:
    """Markdown: each point (each seed) against its plain reference, item by item."""
    compared = [u for u in units if u.get("vs_reference")]
    if not compared:
        return ""
    lines = ["## Each point against plain GPTQ (paired over items; B − A with 95 % CI)", "",
             "| point | reference | metric | reference value | point value | difference [95 % CI] | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for u in compared:
        for r in u["vs_reference"]["rows"]:
            if not main_metric(r["task"], r["metric"]):
                continue
            p = "–" if r["p"] is None else f"{r['p']:.3g}"
            lines.append(f"| {u['name']} | {u['vs_reference']['reference']} | {r['task']}.{r['metric']} | "
                         f"{r['a']:.4g} | {r['b']:.4g} | {interval(r['diff'], r['lo'], r['hi'])} | {p} | "
                         f"{r['verdict']} |")
    return "\n".join(lines) + "\n"


def _ci(s: dict, digits: int = 2, sd: bool = False) -> str:
    if s.get("mean") is None or s.get("lo") is None:
        return interval(s.get("mean"), None, None, f".{digits}f")
    spread = f" (SD {s['sd']:.{digits}f})" if sd else ""
    return interval(s["mean"], s["lo"], s["hi"], f".{digits}f") + spread


def groups_report(groups: list[dict]) -> str:
    """Markdown: means with t-intervals per point, then each point against its reference across seeds."""
    metric_names = sorted({m for g in groups for m in g["metrics"]})
    lines = ["## Across seeds (mean [95 % t-interval] (SD))", "",
             "| point | seeds | " + " | ".join(metric_names) + " |", "|---|---|" + "---|" * len(metric_names)]
    for g in groups:
        lines.append(f"| {g['group']} | {len(g['seeds'])} | "
                     + " | ".join(_ci(g["metrics"][m], 4 if "pair_gap" in m else 2, sd=True) if m in g["metrics"] else "–"
                                  for m in metric_names) + " |")
    compared = [g for g in groups if "vs_reference" in g]
    if compared:
        lines += ["", "## Against plain GPTQ on the same seeds (point − reference; paired t over seeds)", "",
                  "| point | reference | metric | mean difference [95 % CI] | SD | p | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for g in compared:
            for metric, c in g["vs_reference"]["across_seeds"].items():
                sd = "–" if c.get("sd") is None else f"{c['sd']:.3g}"
                p = "–" if c.get("p") is None else f"{c['p']:.3g}"
                lines.append(f"| {g['group']} | {g['reference']} | {metric} | {_ci(c, 4 if 'pair_gap' in metric else 2)}"
                             f" | {sd} | {p} | {c['verdict']}{'; ' + c['bias_verdict'] if c.get('bias_verdict') else ''} |")
        lines += ["", "McNemar per pair task, pooled over the seeds' pairs (treats every seed's choices as independent "
                      "draws; the across-seed rows above do not):", ""]
        for g in compared:
            for task, m in g["vs_reference"]["pooled_mcnemar"].items():
                lines.append(f"- {g['group']}, {task}: {m['a_only']} pairs preferring the stereotype only under plain "
                             f"GPTQ, {m['b_only']} only under this point; p = {m['p']:.3g}")
    return "\n".join(lines) + "\n"


def plot_groups(groups: list[dict], path: Path) -> bool:
    """One panel per headline metric: each point's seed mean with its 95 % t-interval (black: plain GPTQ)."""
    keys = list(dict.fromkeys(k for g in groups for k, s in g["metrics"].items() if s["mean"] is not None))
    bias = [k for k in keys if is_bias_metric(k)]
    metrics = [*bias[:1], *[k for k in keys if lower_is_better(k)][:1],
               *[k for k in keys if k == "pair_gap.ratio_targeted"], *bias[1:2]]
    panels = [Panel([Estimate(g["group"], s["mean"], s["lo"], s["hi"], "k" if g["plain"] else "tab:blue")
                     for g in groups if (s := g["metrics"].get(metric)) and s["mean"] is not None],
                    title=f"{metric}\n(mean, 95 % t-interval over seeds)", reference=ideal_value(metric), band=True)
              for metric in metrics]
    return draw(panels, path, side_by_side=True) is not None
    return True
