"""``fairgptq compare``: paired differences between evaluated models, with intervals and p-values.

Inputs are run directories (``fairgptq run``: results.json + items/) or evaluation outputs
(``fairgptq eval --out``: a folder, or a .json file with its ``<stem>_items/`` folder).  Every
run is compared with the baseline on each task they share, item by item; the items must
be the same set (same ids), or the comparison would not be paired, so a mismatch is an error.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..evaluation.items import ITEMS_DIR, kind_of, read_items
from ..outputs import write_file
from ..statistics import attach_parity_verdicts, bootstrap_weights, mcnemar, paired_bootstrap, verdict
from .formatting import interval, number
from .plotting import Estimate, Panel, forest_plot as draw

N_BOOT = 2000


@dataclass
class EvaluatedRun:
    """One model's per-item records by task, and where they came from."""

    label: str
    path: Path
    items: dict[str, list[dict]]
    pair_gap: dict | None = None


#: the JSON files a run directory holds beside its items/ folder: its run record, and ``fairgptq eval RUN``'s output
RUN_DIR_JSON = ("results.json", "evaluation.json")


def items_folder(path: Path) -> Path:
    """Where a run's or an evaluation output's item records live.

    ``eval --out X.json`` writes ``X_items/``; a run directory's own JSON (its results.json, or the
    evaluation.json that ``fairgptq eval RUN`` writes) sits beside the run's ``items/``."""
    if path.is_file() and path.suffix == ".json":
        own = path.with_name(f"{path.stem}_items")
        if not own.is_dir() and path.name in RUN_DIR_JSON and (path.parent / ITEMS_DIR).is_dir():
            return path.parent / ITEMS_DIR
        return own
    return path / ITEMS_DIR


def load_run(path: str | Path, label: str | None = None) -> EvaluatedRun:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such run directory or evaluation file")
    results_file = p if p.is_file() else p / "results.json"
    pair_gap = None
    if results_file.is_file():
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{results_file}: not valid JSON ({e})") from None
        if isinstance(results, dict) and "points" in results:
            raise ConfigError(f"{p} is a sweep; compare its points (e.g. {p}/points/<name>) or read its report.md")
        pair_gap = results.get("pair_gap") if isinstance(results, dict) else None
    items = read_items(items_folder(p))
    if not items:
        raise ConfigError(f"{items_folder(p)} holds no item records (<task>.jsonl)")
    return EvaluatedRun(label or (p.name if p.name not in ("", ".") else str(p)), p, items, pair_gap)


def _aligned(task: str, base: list[dict], other: list[dict], labels: tuple[str, str]) -> tuple[list, list]:
    """Both runs' records of ``task`` in the same item order; an error unless they cover the same items."""
    ia, ib = {it["id"]: it for it in base}, {it["id"]: it for it in other}
    if len(ia) != len(base) or len(ib) != len(other):
        raise ConfigError(f"{task}: item ids repeat within a run; the records cannot be paired")
    if ia.keys() != ib.keys():
        only_a, only_b = sorted(ia.keys() - ib.keys()), sorted(ib.keys() - ia.keys())
        raise ConfigError(f"{task}: {labels[0]} and {labels[1]} scored different item sets "
                          f"({len(only_a)} only in the first, e.g. {only_a[:3]}; {len(only_b)} only in the second, "
                          f"e.g. {only_b[:3]}); evaluate both with the same task options (limit, split, paths)")
    for label, records in zip(labels, (base, other)):
        for it in records:
            bad = [k for k, v in it.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise ConfigError(f"{task}: item {it['id']} of {label} holds a non-finite value ({bad[0]} = "
                                  f"{it[bad[0]]}); that evaluation is broken (re-evaluate the model), so it cannot "
                                  f"be compared")
    ids = [it["id"] for it in base]
    return [ia[i] for i in ids], [ib[i] for i in ids]


def compare_items(task: str, base: list[dict], other: list[dict], *, n_boot: int = N_BOOT, seed: int = 0,
                  labels: tuple[str, str] = ("A", "B")) -> list[dict]:
    """One row per metric of ``task``: A, B, B − A with its interval, p-value, test and verdict."""
    a, b = _aligned(task, base, other, labels)
    kind = kind_of(a, task)
    if kind_of(b, task) != kind:
        raise ConfigError(f"{task}: the two runs' records are of different kinds")
    fa, fb = kind.resampled(a), kind.resampled(b)
    weights = bootstrap_weights(len(a), n_boot, seed)
    rows = []
    for metric in fa:
        diff, lo, hi, p = paired_bootstrap(fa[metric], fb[metric], weights)
        full = np.ones((1, len(a)))
        row = {"task": task, "metric": metric, "n": len(a), "a": float(fa[metric](full)[0]),
               "b": float(fb[metric](full)[0]), "diff": diff, "lo": lo, "hi": hi, "p": p,
               "test": f"paired bootstrap over {'windows' if kind == 'windows' else 'items'} ({n_boot})"}
        if metric in kind.choice_metrics:
            m = mcnemar([it["choice"] for it in a], [it["choice"] for it in b])
            row.update(p=m.p, test=f"exact McNemar ({m.a_only} + {m.b_only} discordant); CI: paired bootstrap",
                       discordant={"a_only": m.a_only, "b_only": m.b_only})
        row["verdict"] = verdict(row["p"], lo, hi)
        rows.append(row)
    attach_parity_verdicts({r["metric"]: r for r in rows})
    return rows


def compare_runs(baseline: EvaluatedRun, runs: list[EvaluatedRun], *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Every run against the baseline on every task they share (an error if they share none)."""
    comparisons = []
    for run in runs:
        shared = [t for t in baseline.items if t in run.items]
        if not shared:
            raise ConfigError(f"{run.label} and the baseline {baseline.label} share no evaluation task "
                              f"({sorted(run.items)} vs {sorted(baseline.items)})")
        rows = [row for t in shared for row in compare_items(t, baseline.items[t], run.items[t], n_boot=n_boot,
                                                             seed=seed, labels=(baseline.label, run.label))]
        rows += pair_gap_rows(baseline.pair_gap, run.pair_gap)
        comparisons.append({"run": run.label, "path": str(run.path), "rows": rows,
                            "skipped_tasks": sorted(set(baseline.items) ^ set(run.items))})
    return {"baseline": baseline.label, "baseline_path": str(baseline.path), "level": 0.95, "n_boot": n_boot,
            "seed": seed, "comparisons": comparisons}


def pair_gap_rows(reference: dict | None, run: dict | None, verdict: str = "no test (one run each)") -> list[dict]:
    """The held-out pair gap of both models, pooled over the run's targeted modules (all modules if none).

    One row, or none when either run did not measure it.  There is no per-run test: the ratio is
    exact given the weights, and its noise is GPTQ's rounding, which only repeats over seeds sample.
    """
    from ..evaluation.pair_gap import pooled_ratio
    if not (reference and run):
        return []
    targeted = [n for n, m in run["modules"].items() if m["targeted"]]
    names = targeted or list(run["modules"])
    a, b = pooled_ratio(reference["modules"], names), pooled_ratio(run["modules"], names)
    if a is None or b is None:
        return []
    return [{"task": "pair_gap", "metric": "ratio_targeted" if targeted else "ratio_all", "n": len(names),
             "a": a, "b": b, "diff": b - a, "lo": None, "hi": None, "p": None,
             "test": "none for one pair of runs (the ratio is exact given the weights); use repeats over seeds",
             "verdict": verdict}]


def _verdict_text(row: dict) -> str:
    """The row's verdict, and for a bias score or its distance from parity what the distance says."""
    return f"{row['verdict']}; {row['bias_verdict']}" if row.get("bias_verdict") else row["verdict"]


def row_sentence(row: dict, label_a: str, label_b: str) -> str:
    """``B − A = x [lo, hi], p = …, significant / not distinguishable from noise`` (and, for a bias
    score, whether its distance from parity shrank)."""
    p = f", p = {row['p']:.3g}" if row["p"] is not None else ""
    return f"{label_b} − {label_a} = {interval(row['diff'], row['lo'], row['hi'], '.4g')}{p}, {_verdict_text(row)}"


def markdown(result: dict) -> str:
    lines = [f"# Paired comparison against {result['baseline']}", "",
             f"95 % intervals by paired bootstrap ({result['n_boot']} resamples, seed {result['seed']}); "
             f"CrowS-Pairs-style choices tested by exact McNemar. `*_from_parity` is a bias score's distance from "
             f"parity (|score − 50|); a bias score is called less biased only when that distance shrinks "
             f"significantly, so a score that falls past 50 is not.", ""]
    for comp in result["comparisons"]:
        lines += [f"## {comp['run']}", "", "| task | metric | n | baseline | run | difference [95 % CI] | p | test | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in comp["rows"]:
            lines.append(f"| {r['task']} | {r['metric']} | {r['n']} | {number(r['a'])} | {number(r['b'])} | "
                         f"{interval(r['diff'], r['lo'], r['hi'], '.4g')} | {number(r['p'], '.3g')} | {r['test']} | "
                         f"{_verdict_text(r)} |")
        lines += ["", *[f"- {r['task']}.{r['metric']}: {row_sentence(r, 'baseline', comp['run'])}"
                        for r in comp["rows"]], ""]
    return "\n".join(lines)


def forest_plot(result: dict, path: Path) -> bool:
    """One panel per metric: each run's difference from the baseline with its interval (red: significant)."""
    rows = [(c["run"], r) for c in result["comparisons"] for r in c["rows"] if r["lo"] is not None]
    metrics = list(dict.fromkeys(f"{r['task']}.{r['metric']}" for _, r in rows))
    panels = [Panel([Estimate(run, r["diff"], r["lo"], r["hi"], "tab:red" if r["verdict"] == "significant" else "tab:gray")
                     for run, r in rows if f"{r['task']}.{r['metric']}" == metric],
                    title=f"{metric}: run − {result['baseline']} (95 % CI; red = significant)")
              for metric in metrics]
    return draw(panels, path) is not None


def write_outputs(result: dict, out: Path) -> list[Path]:
    """compare.json, compare.md and forest.png in ``out`` (checked by :func:`fairgptq.outputs.output_folder`)."""
    written = [write_file(out / "compare.json", json.dumps(result, indent=2) + "\n"),
               write_file(out / "compare.md", markdown(result) + "\n")]
    if forest_plot(result, out / "forest.png"):
        written.append(out / "forest.png")
    return written


def rich_table(result: dict) -> Any:
    from rich.table import Table
    table = Table(title=f"paired comparison against {result['baseline']} (95 % CI)")
    for col in ("run", "task.metric", "baseline", "run value", "difference [95 % CI]", "p", "verdict"):
        table.add_column(col, justify="right" if col in ("baseline", "run value", "p") else "left")
    for comp in result["comparisons"]:
        for r in comp["rows"]:
            style = "bold" if r["verdict"] == "significant" else ""
            table.add_row(comp["run"], f"{r['task']}.{r['metric']}", number(r["a"]), number(r["b"]),
                          interval(r["diff"], r["lo"], r["hi"], ".4g"), number(r["p"], ".3g"), _verdict_text(r), style=style)
    return table
