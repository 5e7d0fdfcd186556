"""Evaluation results as a JSON file and as a rich table (headline metrics, optionally per category)."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

# the metric(s) each kind of task is judged by: a run records them per point, a sweep's statistics
# compare them across seeds (fairgptq.pipeline.report reads this list, so a new task kind is one edit)
HEADLINES = ("perplexity", "pct_stereotype", "pct_prefer_biased", "SS", "LMS", "ICAT", "acc", "acc_norm", "span_diff",
             "continuation_diff")
# the evaluation table also shows what explains them; anything else stays in the JSON
_SHOWN = HEADLINES + ("likelihood_diff", "sentence_perplexity", "continuation_share")


def save_json(results: dict, path: str | Path) -> Path:
    """Write ``results`` (from :func:`~fairgptq.evaluation.suite.evaluate`) as indented, key-sorted JSON."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return p


def results_table(results: dict, *, detail: bool = False) -> Table:
    """Task | subset | n | metric | value; ``detail`` adds CrowS-Pairs bias types and StereoSet domains."""
    table = Table(title=f"fairgptq evaluation: {results.get('model', {}).get('name', '')}")
    for col in ("task", "subset", "n", "metric", "value"):
        table.add_column(col, justify="right" if col in ("n", "value") else "left")
    for task, res in results["tasks"].items():
        subsets = [("all", res)]
        if detail:
            subsets += sorted({**res.get("by_category", {}), **res.get("by_domain", {})}.items())
        for subset, values in subsets:
            n = values.get("n", values.get("n_predicted_tokens", ""))
            for metric in _SHOWN:
                if metric in values:
                    table.add_row(task, subset, str(n), metric, f"{values[metric]:.4f}")
    return table


def print_table(results: dict, *, detail: bool = False, console: Console | None = None) -> None:
    (console or Console()).print(results_table(results, detail=detail))


def headline_metrics(evaluation: dict | None) -> dict[str, float]:
    """``task.metric`` -> value for the headline metrics of an :func:`evaluate` result."""
    out: dict[str, float] = {}
    for task, res in ((evaluation or {}).get("tasks") or {}).items():
        for metric in HEADLINES:
            if isinstance(res.get(metric), (int, float)):
                out[f"{task}.{metric}"] = float(res[metric])
    return out
