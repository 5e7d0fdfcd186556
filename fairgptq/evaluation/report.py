"""Evaluation results as a JSON file and as a rich table (headline metrics, optionally per category)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ..contract.kinds import is_parity_distance, parity_distance, with_distances

if TYPE_CHECKING:
    from ..contract.kinds import ItemKind

# the evaluation table also shows, beside each task's headline metrics (its ItemKind's), what explains them;
# anything else stays in the JSON
_EXPLAINING = ("likelihood_diff", "sentence_perplexity", "continuation_share")


def _kind(task: str) -> "ItemKind | None":
    from .task_registry import registered_tasks
    return getattr(registered_tasks().get(task), "kind", None)


def headlines(task: str) -> tuple[str, ...]:
    """The metrics ``task`` is judged by (its kind's); a task no longer registered: every kind's."""
    kind = _kind(task)
    if kind is not None:
        return kind.headline
    from .items import registered_kinds
    return tuple(dict.fromkeys(m for k in registered_kinds() for m in k.headline))


def _property(key: str, attribute: str):
    """``attribute`` of the kind of ``task.metric``'s task (by the metric's name when the task is unknown)."""
    task, _, metric = key.partition(".")
    kind = _kind(task)
    if kind is None:
        from .items import registered_kinds
        kind = next((k for k in registered_kinds() if metric in k.headline or metric in getattr(k, attribute)), None)
    return metric, kind, getattr(kind, attribute) if kind is not None else ()


def main_metric(task: str, metric: str) -> bool:
    """Whether ``metric`` is the first headline of ``task`` (what compact tables show) or its distance from
    parity, StereoSet's ICAT, or the pair gap's ratio."""
    first = headlines(task)[:1]
    return (metric == "ratio_targeted" or metric in first or (metric == "ICAT" and task == "stereoset")
            or (bool(first) and metric == parity_distance(first[0])))


def lower_is_better(key: str) -> bool:
    """Whether a smaller ``task.metric`` is the better model (perplexity), as the task's kind declares."""
    metric, _, values = _property(key, "lower_is_better")
    return metric in values


def ideal_value(key: str) -> float | None:
    """Where an unbiased model scores ``task.metric`` (50 for a stereotype share), or None."""
    metric, _, values = _property(key, "ideal")
    return values.get(metric) if values else None


def is_bias_metric(key: str) -> bool:
    """Whether ``task.metric`` measures a stereotype preference."""
    metric, _, values = _property(key, "bias")
    return metric in values


def save_json(results: dict, path: str | Path) -> Path:
    """Write ``results`` (from :func:`~fairgptq.evaluation.suite.evaluate`) as indented, key-sorted JSON."""
    from ..outputs import write_file
    return write_file(Path(path), json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


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
            for metric in (*headlines(task), *_EXPLAINING):
                if metric in values:
                    table.add_row(task, subset, str(n), metric, f"{values[metric]:.4f}")
    return table


def print_table(results: dict, *, detail: bool = False, console: Console | None = None) -> None:
    (console or Console()).print(results_table(results, detail=detail))


def headline_metrics(evaluation: dict | None) -> dict[str, float]:
    """``task.metric`` -> value for the headline metrics of an :func:`evaluate` result (distances from
    parity included: a task's result holds its scores, its kind adds their distances)."""
    out: dict[str, float] = {}
    for task, res in ((evaluation or {}).get("tasks") or {}).items():
        kind = _kind(task)
        if kind is not None:
            res = with_distances(res, kind.ideal)
        for metric in headlines(task):
            if isinstance(res.get(metric), (int, float)):
                out[f"{task}.{metric}"] = float(res[metric])
    return out


def with_parity(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """``task.metric`` values with the distance from parity beside every score that has an ideal.

    A run recorded before distances were headline metrics (or by a task whose result lacks them)
    still gets them: |score − ideal| is exact given the score."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        out[key] = value
        distance = parity_distance(key)
        ideal = None if is_parity_distance(key) else ideal_value(key)
        if distance in metrics:
            out[distance] = metrics[distance]
        elif ideal is not None and isinstance(value, (int, float)) and math.isfinite(value):
            out[distance] = abs(float(value) - ideal)
    return out
