"""One entry point for every evaluation: ``evaluate(model, tokenizer, tasks, **options) -> dict``.

The CLI and the pipelines call this and nothing else.  The tasks themselves live in the
plugin registry (:mod:`.tasks`: each is one module with its options model, data loading,
scoring and item records), so a task added by a plugin is evaluated, listed and validated
exactly as a built-in one.  Task names and option values are checked before any model
work, so a typo fails in a second instead of after an hour of perplexity.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..version import __version__
from ..core.errors import ConfigError
from ..contract.pairs import Pair
from .plugin import fairgptq_evaluation_tasks
from .scoring import score_sentences, supports_packing
from ..contract.kinds import with_distances
from .stereoset import ON_OVERLAP
from ..contract.tasks import TaskContext
from .task_registry import options_for, registered_tasks, resolve_options

if TYPE_CHECKING:
    from ..registry import Registry

TASKS: tuple[str, ...] = tuple(fairgptq_evaluation_tasks())
"""The built-in task names; :func:`~fairgptq.contract.tasks.registered_tasks` adds the plugins' ones."""


def evaluate(model: Any, tokenizer: Any = None, tasks: Iterable[str] = ("wikitext2", "crows_pairs"), *,
             batch_size: int = 16, progress: bool = True, limit: int | Mapping[str, int] | None = None,
             paths: Mapping[str, str | Path] | None = None, calibration: Iterable[Pair | str] | None = None,
             on_overlap: str = "error", registry: "Registry | None" = None, **options: Any) -> dict:
    """Run ``tasks`` on a model and return one JSON-ready dict (each task's summary under ``["tasks"]``).

    >>> from fairgptq import evaluate, load_model
    >>> model, tok = load_model(MODEL)
    >>> scores = evaluate(model, tok, ["crows_pairs"], limit=20, progress=False)
    >>> 0 <= scores["tasks"]["crows_pairs"]["pct_stereotype"] <= 100
    True

    ``model`` is a loaded model (full precision or quantized in memory; then ``tokenizer``
    is required) or a name / checkpoint folder for :func:`~fairgptq.model_loading.load_model`.
    Every task gets: ``batch_size`` (rows per scoring forward: one request per row, or where the
    model supports it prefix-tree rows that run shared prefixes once, see
    :mod:`~fairgptq.evaluation.packing`; perplexity windows go one at a time),
    ``progress`` (rich bars), ``limit`` (first N items of each likelihood task, or a mapping
    task → N for some tasks only: BoolQ's long passages cost 5x PIQA's items), ``paths``
    (task name → data file, overriding the local copies), ``calibration`` (the pairs the model
    was calibrated on: bias tasks refuse to score them, or only warn with ``on_overlap="warn"``).
    ``options`` are the tasks' own (``max_tokens``, ``stereoset_split``, ``pair_split``, ...: the
    fields of each task's options model, where their defaults are; ``fairgptq plugins`` lists
    them).  ``registry``: where the task names are looked up (default: the process-wide one).
    """
    tasks = list(tasks)
    known = registered_tasks(registry)
    unknown = [t for t in tasks if t not in known]
    if unknown or not tasks:
        raise ConfigError(f"unknown evaluation task(s) {unknown}; valid task names: {list(known)}")
    bad_paths = [t for t in (paths or {}) if t not in known]
    if bad_paths:
        raise ConfigError(f"paths given for unknown task(s) {bad_paths}; valid task names: {list(known)}")
    if on_overlap not in ON_OVERLAP:
        raise ConfigError(f"on_overlap must be one of {ON_OVERLAP}, got {on_overlap!r}")
    values = resolve_options(options, known)
    task_options = {t: options_for(known[t], values) for t in tasks}
    model_name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        from ..model_loading import load_model
        model, tokenizer = load_model(model)
    elif tokenizer is None:
        raise ConfigError("a model object needs its tokenizer: evaluate(model, tokenizer, tasks)")
    bad_limits = [t for t in limit if t not in known] if isinstance(limit, Mapping) else []
    if bad_limits:
        raise ConfigError(f"limit given for unknown task(s) {bad_limits}; valid task names: {list(known)}")
    paths = dict(paths or {})
    calibration = list(calibration) if calibration is not None else None  # every task reads it
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for task in tasks:
        t0 = time.perf_counter()
        context = TaskContext(task, Path(paths[task]) if task in paths else None,
                              limit.get(task) if isinstance(limit, Mapping) else limit, batch_size, progress,
                              calibration, on_overlap, partial(score_sentences, batch_size=batch_size,
                                                               progress=progress, description=task))
        result = known[task].run(model, tokenizer, task_options[task], context)
        kind = known[task].kind
        if (kind is not None and isinstance(result.get("items"), list) and result["items"]
                and not set(kind.headline) <= set(result)):  # a task that left its summary to its kind
            result = {**kind.summarize(result["items"]), **result}
        # each bias score's distance from parity beside it (contract.kinds)
        results[task] = result if kind is None else with_distances(result, kind.ideal)
        seconds[task] = round(time.perf_counter() - t0, 2)
    dtype = next(model.parameters()).dtype
    return {"fairgptq_version": __version__,
            "model": {"name": model_name, "dtype": str(dtype).removeprefix("torch."),
                      "parameters": sum(p.numel() for p in model.parameters())},
            "settings": {"batch_size": batch_size, "packed_scoring": supports_packing(model),
                         "limit": dict(limit) if isinstance(limit, Mapping) else limit,
                         "paths": {k: str(v) for k, v in paths.items()}, **values, "on_overlap": on_overlap},
            "tasks": results, "seconds": seconds}
