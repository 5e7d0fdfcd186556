"""One entry point for every evaluation: ``evaluate(model, tokenizer, tasks, **options) -> dict``.

The CLI and the pipelines call this and nothing else, so task names, defaults and the
result layout live in one place.  Task names are checked before any model work, so a
typo fails in a second instead of after an hour of perplexity.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import __version__
from ..core.errors import ConfigError
from ..datasets_adapters.pairs import Pair
from .crows_decomposition import evaluate_crows_decomposition
from .crows_pairs import evaluate_crows_pairs
from .pair_tasks import PAIR_TASKS, evaluate_pair_task
from .perplexity import evaluate_wikitext2
from .scoring import supports_packing
from .stereoset import evaluate_stereoset
from .zeroshot import evaluate_zeroshot
from .zeroshot_tasks import ZERO_SHOT_TASKS

TASKS: tuple[str, ...] = ("wikitext2", "crows_pairs", "stereoset", "crows_pairs_decomposed", *ZERO_SHOT_TASKS,
                          *PAIR_TASKS)


def evaluate(model: Any, tokenizer: Any = None, tasks: Iterable[str] = ("wikitext2", "crows_pairs"), *,
             batch_size: int = 16, progress: bool = True, limit: int | Mapping[str, int] | None = None,
             paths: Mapping[str, str | Path] | None = None,
             max_tokens: int | None = None, seqlen: int | None = None,
             crows_scoring: str = "lm_eval", language: str | None = None,
             stereoset_split: str = "all", holdout_fraction: float = 0.5,
             calibration: Iterable[Pair | str] | None = None, on_overlap: str = "error",
             pair_split: str = "all") -> dict:
    """Run ``tasks`` on a model and return one JSON-ready dict.

    ``model`` is a loaded model (full precision or quantized in memory; then ``tokenizer``
    is required) or a name / checkpoint folder for :func:`~fairgptq.core.model_loading.load_model`.
    Options: ``batch_size`` (rows per scoring forward: one request per row, or where the
    model supports it prefix-tree rows that run shared prefixes once, see
    :mod:`~fairgptq.evaluation.packing`; perplexity windows go one at a time),
    ``progress`` (rich bars), ``limit`` (first N items of each likelihood task, or a mapping
    task → N for some tasks only: BoolQ's long passages cost 5x PIQA's items), ``paths``
    (task name → data file, overriding the local copies), ``max_tokens`` / ``seqlen``
    (WikiText-2), ``crows_scoring`` ("lm_eval" or "bias_bench") and ``language`` (label
    only), ``stereoset_split`` / ``holdout_fraction`` / ``calibration`` / ``on_overlap``
    (see :func:`~fairgptq.evaluation.stereoset.evaluate_stereoset`), ``pair_split`` (the split
    the multilingual / narrative pair tasks score, see :mod:`~fairgptq.evaluation.pair_tasks`).
    """
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown evaluation task(s) {unknown}; valid task names: {list(TASKS)}")
    bad_paths = [t for t in (paths or {}) if t not in TASKS]
    if bad_paths:
        raise ConfigError(f"paths given for unknown task(s) {bad_paths}; valid task names: {list(TASKS)}")
    model_name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        from ..core.model_loading import load_model
        model, tokenizer = load_model(model)
    elif tokenizer is None:
        raise ConfigError("a model object needs its tokenizer: evaluate(model, tokenizer, tasks)")
    bad_limits = [t for t in limit if t not in TASKS] if isinstance(limit, Mapping) else []
    if bad_limits:
        raise ConfigError(f"limit given for unknown task(s) {bad_limits}; valid task names: {list(TASKS)}")
    paths = dict(paths or {})
    limits = {t: (limit.get(t) if isinstance(limit, Mapping) else limit) for t in tasks}
    common = {"batch_size": batch_size, "progress": progress}
    runners = {
        "wikitext2": lambda: evaluate_wikitext2(model, tokenizer, path=paths.get("wikitext2"), seqlen=seqlen,
                                                max_tokens=max_tokens, progress=progress),
        "crows_pairs": lambda: evaluate_crows_pairs(model, tokenizer, path=paths.get("crows_pairs"),
                                                    language=language, scoring=crows_scoring, limit=limits["crows_pairs"],
                                                    **common),
        "crows_pairs_decomposed": lambda: evaluate_crows_decomposition(
            model, tokenizer, path=paths.get("crows_pairs_decomposed"), limit=limits["crows_pairs_decomposed"],
            **common),
        "stereoset": lambda: evaluate_stereoset(model, tokenizer, path=paths.get("stereoset"), split=stereoset_split,
                                                holdout_fraction=holdout_fraction, calibration=calibration,
                                                on_overlap=on_overlap, limit=limits["stereoset"], **common),
        **{t: (lambda t=t: evaluate_pair_task(model, tokenizer, t, path=paths.get(t), scoring=crows_scoring,
                                              split=pair_split, holdout_fraction=holdout_fraction,
                                              calibration=calibration, on_overlap=on_overlap, limit=limits[t],
                                              **common)) for t in PAIR_TASKS if t in tasks},
    }
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for task in tasks:
        t0 = time.perf_counter()
        run = runners.get(task) or (lambda task=task: evaluate_zeroshot(model, tokenizer, task, path=paths.get(task),
                                                                         limit=limits[task], **common))
        results[task] = run()
        seconds[task] = round(time.perf_counter() - t0, 2)
    dtype = next(model.parameters()).dtype
    return {"fairgptq_version": __version__,
            "model": {"name": model_name, "dtype": str(dtype).removeprefix("torch."),
                      "parameters": sum(p.numel() for p in model.parameters())},
            "settings": {"batch_size": batch_size, "packed_scoring": supports_packing(model), "limit": dict(limit) if isinstance(limit, Mapping) else limit, "paths": {k: str(v) for k, v in paths.items()},
                         "max_tokens": max_tokens, "seqlen": seqlen, "crows_scoring": crows_scoring,
                         "stereoset_split": stereoset_split, "holdout_fraction": holdout_fraction,
                         "on_overlap": on_overlap, "pair_split": pair_split},
            "tasks": results, "seconds": seconds}
