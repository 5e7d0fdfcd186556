"""Per-item records: every likelihood task's individual outcomes, kept beside its summary.

A summary (pct_stereotype 54.3) cannot say whether it differs from another model's 54.7;
the pair-by-pair outcomes can (:mod:`fairgptq.statistics`).  So every task returns an
``items`` list, the run directory keeps it as ``items/<task>.jsonl``, and each summary is
*computed from* those records by the function registered for their kind below, which is
what lets a test (and a sceptical reader) recompute every figure from the files.

Each task declares the kind of its records (:class:`~fairgptq.contract.kinds.ItemKind`, in the
task's own module); records read without their task are recognised by their fields.  The
built-in kinds:

- ``pair_choice``: ``choice`` (1 = the more stereotypical side preferred), ``ll_more``,
  ``ll_less``, ``bias_type`` (CrowS-Pairs and any pair-preference task)
- ``preference``: ``choice`` (1 = the biased side preferred), ``ll_biased``, ``ll_other``,
  ``bias_type`` (CHBias, RedditBias, StereoSet intersentence as pairs)
- ``stereoset``: ``stereo``, ``anti``, ``unrelated`` scores, ``domain``, ``target``
- ``multiple_choice``: ``correct``, ``correct_norm`` (0 or 1)
- ``windows``: ``nll`` (summed over the window) and ``tokens`` (perplexity)
- ``decomposition``: a pair's span and continuation log-likelihoods (``span_more`` ...
  ``rest_less``; see :mod:`fairgptq.evaluation.crows_decomposition`)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..core.errors import ConfigError, DataError
from ..contract.kinds import ItemKind

ITEMS_DIR = "items"


def registered_kinds() -> list[ItemKind]:
    """Every record kind the registered tasks declare (built-in and plugins'), most specific first."""
    from .task_registry import registered_tasks
    kinds: dict[str, ItemKind] = {}
    for task in registered_tasks().values():
        if task.kind is not None:
            kinds.setdefault(task.kind.name, task.kind)
    return sorted(kinds.values(), key=lambda k: -len(k.fields))


def kind_of(items: Sequence[dict], task: str | None = None) -> ItemKind:
    """The kind ``task`` declares, checked against the records; without a task, the kind whose fields they carry."""
    if not items:
        raise DataError("no item records")
    if task is not None:
        from .task_registry import registered_tasks
        declared = getattr(registered_tasks().get(task), "kind", None)
        if declared is not None and declared.matches(items[0]):
            return declared
    for kind in registered_kinds():
        if kind.matches(items[0]):
            return kind
    raise DataError(f"item records with fields {sorted(items[0])} are of no known kind; known kinds and their "
                    f"fields: { {k.name: sorted(k.fields) for k in registered_kinds()} }")


def item_kind(items: Sequence[dict]) -> str:
    """The name of the kind whose fields the records carry (checked on the first record)."""
    return kind_of(items).name


def summarize(items: Sequence[dict], task: str | None = None) -> dict:
    """The task summary recomputed from its item records, by their kind."""
    return kind_of(items, task).summarize(items)


def split_evaluation(evaluation: dict | None) -> tuple[dict | None, dict[str, list[dict]]]:
    """An :func:`evaluate` result without its item lists (for results.json), and the lists by task."""
    if evaluation is None:
        return None, {}
    tasks, items = {}, {}
    for task, res in evaluation.get("tasks", {}).items():
        res = dict(res)
        if "items" in res:
            items[task] = res.pop("items")
        tasks[task] = res
    return {**evaluation, "tasks": tasks}, items


def record_evaluation(evaluation: dict, run_dir: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Split an :func:`evaluate` result and write its item lists to ``run_dir/items/``.

    Returns the result without the lists (what results.json keeps) and the lists by task.
    """
    stripped, items = split_evaluation(evaluation)
    write_items(run_dir / ITEMS_DIR, items)
    return stripped, items


def write_items(folder: Path, items: dict[str, list[dict]]) -> list[Path]:
    """``folder/<task>.jsonl``, one record a line, each file written whole then renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task, records in items.items():
        path = folder / f"{task}.jsonl"
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        written.append(path)
    return written


def item_tasks(folder: Path) -> list[str]:
    """The tasks ``folder`` (an items directory) holds records of, without reading them."""
    return sorted(path.stem for path in folder.glob("*.jsonl"))


def read_items(folder: Path) -> dict[str, list[dict]]:
    """Every ``<task>.jsonl`` in ``folder`` (an items directory)."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no per-item records here (an items/ directory written by `fairgptq run` "
                          f"or `fairgptq eval --out`); re-run the evaluation with this version of fairgptq")
    out = {}
    for task in item_tasks(folder):
        path = folder / f"{task}.jsonl"
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not a JSON record ({e})") from None
        out[path.stem] = records
    return out
