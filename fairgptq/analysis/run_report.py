"""What a run leaves behind for people: report.md with tables, and PNG plots (matplotlib, Agg).

results.json is the complete record; the report picks the headline numbers from it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..evaluation.report import headline_metrics, ideal_value, is_bias_metric, lower_is_better
from .formatting import interval
from .plotting import pyplot



def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.3f}"
    return "–" if v is None else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_delta_w(modules: list[dict], path: Path) -> bool:
    """Per-layer relative weight change of the fair update, one line per role; False if nothing to plot."""
    by_role: dict[str, list[tuple[int, float]]] = {}
    for m in modules:
        if m.get("delta_w_rel") is not None:
            by_role.setdefault(m["role"], []).append((m["layer"], m["delta_w_rel"]))
    if not by_role:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for role, pts in sorted(by_role.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=3, label=role)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("‖ΔW‖/‖W‖ of the fair update (%)")
    ax.set_title("Fair-GPTQ pre-update size per layer")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def loss_by_role(modules: list[dict]) -> dict[str, dict[str, float]]:
    """Per role: the modules' summed GPTQ loss tr((W − Ŵ) H (W − Ŵ)ᵀ), their count and the largest one."""
    roles: dict[str, list[float]] = {}
    for m in modules:
        if m.get("gptq_loss") is not None:
            roles.setdefault(m["role"], []).append(m["gptq_loss"])
    return {role: {"modules": len(v), "sum": sum(v), "max": max(v)} for role, v in sorted(roles.items())}


def stability_summary(modules: list[dict]) -> dict:
    """Counts of retries, repairs, overshoots, the GPTQ loss per role and every event message, for
    results.json and the report."""
    stab = [m["stability"] for m in modules]
    return {"modules": len(modules),
            "damping_retries": sum(1 for s in stab if s.get("attempts", 1) > 1),
            "eigen_repairs": sum(1 for s in stab if s.get("eigen_repair")),
            "exact_update_retries": sum(1 for s in stab if s.get("exact_update_attempts", 0) > 1),
            "exact_update_eigen_repairs": sum(1 for s in stab if s.get("exact_update_eigen_repair")),
            "gptq_loss_by_role": loss_by_role(modules),
            "dead_columns": sum(s.get("dead_columns", 0) for s in stab),
            "fair_modules": sum(1 for m in modules if m.get("fair_mode")),
            "overshoots": sum(1 for m in modules if m.get("fair_overshoot")),
            "max_delta_w_rel": max((m["delta_w_rel"] for m in modules if m.get("delta_w_rel") is not None),
                                   default=None),
            "events": [f"{m['name']}: {e}" for m in modules for e in m["stability"].get("events", [])]}


def metrics_table(metrics: dict[str, float], float_model: dict[str, float], plain: dict[str, float]) -> str:
    """The quantized model's metrics beside the float model's and plain GPTQ's, with the differences.

    A reference column appears only when that reference was evaluated (``evaluation.float_baseline``,
    ``evaluation.plain_baseline``): a column of dashes says nothing.
    """
    header, refs = ["metric", "quantized"], []
    for label, values in (("float", float_model), ("plain GPTQ", plain)):
        if values:
            header += [label, f"Δ vs {label}"]
            refs.append(values)
    rows = [[k, v, *(x for ref in refs for x in (ref.get(k), v - ref[k] if k in ref else None))]
            for k, v in metrics.items()]
    note = "" if refs else ("\n\nNo reference evaluated: set `evaluation.float_baseline` and "
                            "`evaluation.plain_baseline` to compare with the float model and plain GPTQ.")
    return _table(header, rows) + note


def vs_plain_sentence(row: dict) -> str:
    """``task.metric: this run − plain GPTQ = x [lo, hi], p = …, verdict`` (plain values in brackets)."""
    p = f", p = {row['p']:.3g}" if row.get("p") is not None else ""
    return (f"{row['task']}.{row['metric']}: {row['b']:.4g} vs plain GPTQ {row['a']:.4g}; difference "
            f"{interval(row['diff'], row.get('lo'), row.get('hi'), '+.3g')}{p}: {row['verdict']}")


_OBJECTIVE_IDENTITY = ("name", "pair_set", "pairs", "pairs_sha256_16", "auto")


def strength_curve(auto: dict) -> list[str]:
    """An objective's strength chosen on held-out calibration pairs (``target: auto``): the grid it read,
    each point's validation share, distance from parity and control, and the choice."""
    rows = [[c["target"], c.get("validation_pct_stereotype"), c.get("distance"), c.get("perplexity_ratio"),
             "chosen" if c["target"] == auto.get("chosen") else ""] for c in auto.get("curve", [])]
    return ["### Strength chosen on held-out calibration pairs (`target: auto`)", "",
            f"Chosen target {auto.get('chosen')}: of the grid below, the point whose {auto.get('validation_pairs')} "
            f"validation pairs (held out of the {auto.get('fit_pairs')} the gradient was taken on) come closest to "
            f"parity while the control ({auto.get('control')}) stays within a perplexity ratio of "
            f"1 + {auto.get('tolerance')}.", "",
            _table(["target", "validation % stereotype", "|% − 50|", "control perplexity ratio", ""], rows), ""]


def objective_settings_text(described: dict) -> str:
    """An objective's own record (its settings, and what it measured during the run) as ``key=value`` text.

    Whatever the objective's ``describe()`` says, in its order: the report never assumes a setting name.
    """
    return ", ".join(f"{k}={_short(v)}" for k, v in described.items() if k not in _OBJECTIVE_IDENTITY)


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v, default=str)


def _column_order(qc: dict) -> str:
    """The GPTQ loop's column order in words (docs/quantizer.md); configs saved before GAR lack its key."""
    if qc.get("act_order"):
        return "static act-order" if qc.get("static_groups") else "act-order"
    return "GAR" if qc.get("act_group_aware") else "none"


def run_report(results: dict) -> str:
    """report.md of one run."""
    cfg, q = results["config"], results["quantization"]
    parts = [f"# fairgptq run: {results['pipeline']}", ""]
    if results.get("point"):
        parts += ["Sweep point: " + ", ".join(f"`{k}` = {v}" for k, v in results["point"].items()), ""]
    qc = q["config"]
    parts += ["## Setup", _table(["model", "bits", "group", "sym", "column order", "damp", "backend"],
                                 [[cfg["model"]["name"], qc["bits"], qc["group_size"], qc["sym"], _column_order(qc),
                                   qc["damp"], cfg["backend"]["name"]]]), ""]
    onload = (results.get("model") or {}).get("onload") or {}
    if onload.get("onload"):
        parts += [f"Quantized by sequential onloading ({onload['reason']}): one decoder layer at a time from the "
                  f"safetensors shards; evaluated with {onload.get('evaluated_with') or 'no evaluation'}.", ""]
    if results["objectives"]:
        rows = [[o.get("name"), o.get("pair_set", "–"), o.get("pairs", "–"), o.get("pairs_sha256_16", "–"),
                 objective_settings_text(o)] for o in results["objectives"]]
        parts += ["## Objectives", _table(["objective", "pair set", "pairs", "sha256/16", "settings and measures"],
                                          rows), ""]
        parts += [line for o in results["objectives"] if isinstance(o.get("auto"), dict)
                  for line in strength_curve(o["auto"])]
    if results["metrics"]:
        parts += ["## Metrics", metrics_table(results["metrics"], headline_metrics(results.get("baseline")),
                                              headline_metrics(results.get("plain_baseline"))), ""]
    if results.get("vs_plain"):
        parts += ["## Against plain GPTQ on the same calibration (paired over items)", "",
                  "One run is one draw of GPTQ's rounding noise: a difference is evidence only when it is "
                  "significant here, and a claim about the method needs repeats over seeds.", "",
                  *[f"- {vs_plain_sentence(r)}" for r in results["vs_plain"]], ""]
    s = q["summary"]
    parts += ["## Stability", _table(["modules", "damping retries", "eigen repairs", "exact-update retries",
                                      "exact-update repairs", "dead columns", "fair modules", "overshoots",
                                      "max ‖ΔW‖/‖W‖"],
                                     [[s["modules"], s["damping_retries"], s["eigen_repairs"],
                                       s.get("exact_update_retries", 0), s.get("exact_update_eigen_repairs", 0),
                                       s["dead_columns"], s["fair_modules"], s["overshoots"],
                                       s["max_delta_w_rel"]]]), ""]
    if s.get("gptq_loss_by_role"):
        parts += ["### GPTQ loss per role", "",
                  "tr((W − Ŵ) H (W − Ŵ)ᵀ): the layer-wise output error on the calibration data that GPTQ minimises "
                  "(W before any objective's pre-update, so a term's own change counts too).", "",
                  _table(["role", "modules", "summed loss", "largest module"],
                         [[r, v["modules"], v["sum"], v["max"]] for r, v in s["gptq_loss_by_role"].items()]), ""]
    if s["events"]:
        parts += ["Events:", ""] + [f"- {e}" for e in s["events"][:50]] + [""]
    if "delta_w.png" in results.get("plots", []):
        parts += ["![per-layer ΔW](delta_w.png)", ""]
    fair = [m for m in q["modules"] if m.get("delta_w_rel") is not None]
    if fair:
        parts += ["### Fair update per module", _table(
            ["module", "mode", "spectral radius", "‖ΔW‖/‖W‖", "tr H_bias / tr H"],
            [[m["name"], m["fair_mode"], m["fair_radius"], m["delta_w_rel"], m["hbias_trace_ratio"]] for m in fair]),
            ""]
    exp = results.get("export")
    if exp:
        parts += ["## Export", f"GPTQ checkpoint (`{exp['checkpoint_format']}`) in `{exp['path']}`, "
                               f"{exp['size_mb']:.1f} MB; reload check: {exp.get('reload_check', 'not run')}.", ""]
        grouping = exp.get("grouping") or {}
        if grouping.get("reason"):
            parts += [f"Stored with group size {grouping['stored_group_size']} (quantized with "
                      f"{grouping['quantized_group_size']}): {grouping['reason']}.", ""]
    t = results["timings"]
    parts += ["## Timings (s)", _table(list(t), [list(t.values())]), ""]
    v = results["versions"]
    parts += ["## Versions", ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    return "\n".join(parts)


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_sweep(points: list[dict], keys: list[str], path: Path, baseline: dict | None = None) -> bool:
    """First numeric swept key (α) vs stereotype score and vs perplexity, one line per other setting.

    A point that sets only that key (α = 0, plain GPTQ) belongs to no series: it is drawn as a
    dashed reference line, like the float baseline (dotted) and the ideal score 50 (grey), because
    "better than plain GPTQ" is the comparison every reader makes.  Perplexity goes to a log axis
    when the points span more than 20x (one broken setting would otherwise flatten the rest).
    """
    x_key = next((k for k in keys if all(_numeric(p["values"].get(k)) for p in points)), None)
    keys = list(dict.fromkeys(k for p in points for k in p["metrics"]))
    metric_bias = next((k for k in keys if is_bias_metric(k)), None)
    metric_ppl = next((k for k in keys if lower_is_better(k)), None)
    panels = [m for m in (metric_bias, metric_ppl) if m]
    if x_key is None or not panels:
        return False
    x_name = x_key.split(".")[-1]
    series: dict[str, list[dict]] = {}
    references: list[dict] = []
    for p in points:
        label = ", ".join(f"{k.split('.')[-1]}={p['values'][k]}" for k in keys if k != x_key and k in p["values"])
        if not label and len(keys) > 1:
            references.append(p)
        else:
            series.setdefault(label or x_name, []).append(p)
    base = headline_metrics(baseline)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels) + (1 if len(panels) == 2 else 0), figsize=(5 * (len(panels) + 1), 3.8))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]

    def guides(ax: Any, metric: str) -> None:
        for ref in references:
            if metric in ref["metrics"]:
                ax.axhline(ref["metrics"][metric], color="k", ls="--", lw=1, label=f"{x_name}={ref['values'][x_key]}")
        if metric in base:
            ax.axhline(base[metric], color="k", ls=":", lw=1, label="float model")
        if ideal_value(metric) is not None:
            ax.axhline(ideal_value(metric), color="grey", lw=3, alpha=0.3, label=f"ideal ({ideal_value(metric):g})")

    def log_if_spread(values: list[float]) -> str:
        return "log" if values and min(values) > 0 and max(values) / min(values) > 20 else "linear"

    for ax, metric in zip(axes, panels):
        for label, pts in series.items():
            pts = sorted((q for q in pts if metric in q["metrics"]), key=lambda q: q["values"][x_key])
            ax.plot([q["values"][x_key] for q in pts], [q["metrics"][metric] for q in pts], marker="o", label=label)
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric)
        guides(ax, metric)
        ax.set_yscale(log_if_spread([q["metrics"][metric] for q in points if metric in q["metrics"]]))
        ax.grid(alpha=0.3)
    if len(panels) == 2:
        ax = axes[2]
        both = [q for q in points if metric_bias in q["metrics"] and metric_ppl in q["metrics"]]
        for label, pts in series.items():
            pts = [q for q in pts if q in both]
            ax.scatter([q["metrics"][metric_ppl] for q in pts], [q["metrics"][metric_bias] for q in pts], label=label)
            for q in pts:
                ax.annotate(str(q["values"][x_key]), (q["metrics"][metric_ppl], q["metrics"][metric_bias]), fontsize=7)
        for ref in (r for r in references if r in both):
            ax.scatter([ref["metrics"][metric_ppl]], [ref["metrics"][metric_bias]], color="k", marker="x")
        if ideal_value(metric_bias) is not None:
            ax.axhline(ideal_value(metric_bias), color="grey", lw=3, alpha=0.3)
        ax.set_xscale(log_if_spread([q["metrics"][metric_ppl] for q in both]))
        ax.set_xlabel(metric_ppl)
        ax.set_ylabel(metric_bias)
        ref_note = "".join(f"; ×: {x_name}={r['values'][x_key]}" for r in references[:1])
        ax.set_title(f"trade-off (labels: {x_name}{ref_note})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def sweep_report(summary: dict) -> str:
    """report.md of a sweep: one row per point, the float baseline on top when evaluated."""
    keys = summary["keys"]
    metric_names = sorted({m for p in summary["points"] for m in p["metrics"]})
    rows = []
    base = headline_metrics(summary.get("baseline"))
    if base:
        rows.append(["float baseline", *(["–"] * len(keys)), *(base.get(m) for m in metric_names), "–", "–"])
    for p in summary["points"]:
        rows.append([f"[{p['name']}](points/{p['name']}/report.md)", *(json.dumps(p["values"].get(k)) for k in keys),
                     *(p["metrics"].get(m) for m in metric_names), p.get("max_delta_w_rel"), p.get("overshoots")])
    parts = [f"# fairgptq sweep: {summary['pipeline']}", "",
             f"{len(summary['points'])} points over " + " x ".join(f"`{k}`" for k in keys) + ".", "",
             _table(["point", *keys, *metric_names, "max ‖ΔW‖/‖W‖", "overshoots"], rows), "",
             "overshoots: modules where the spectral radius of H_bias (H+λI)⁻¹ is >= 1, i.e. where the "
             "first-order update over-corrects (in exact mode: where it would have; exact itself is a stable "
             "shrinkage).", ""]
    if "sweep.png" in summary.get("plots", []):
        parts += ["![sweep](sweep.png)", ""]
    return "\n".join(parts)
