"""Zero-shot multiple choice, lm-eval's way: acc and acc_norm from option log-likelihoods.

Each option is scored as the continuation ``target_delimiter + option`` of the prompt.
acc picks the option with the highest summed log-likelihood; acc_norm divides each by
the option's length in characters (lm-eval's ``completion_len = len(choice)``, the
delimiter not counted) before picking.  Ties go to the first option (``argmax``).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

from ..core.errors import ConfigError
from ..statistics import at_unit_weights, resampled_multiple_choice
from ..contract.kinds import ItemKind
from .scoring import encode_request, score_requests
from ..contract.tasks import EvaluationTask, NoOptions, TaskContext
from .zeroshot_tasks import ZERO_SHOT_TASKS, MultipleChoiceItem, load_zeroshot


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))


def evaluate_multiple_choice(model, tokenizer, items: Sequence[MultipleChoiceItem], *, task: str = "custom",
                             batch_size: int = 16, progress: bool = True) -> dict:
    """acc and acc_norm (fractions in [0, 1], as lm-eval reports them) over ``items``."""
    if not items:
        raise ConfigError(f"{task}: no items to evaluate")
    requests = [encode_request(tokenizer, it.context, it.target_delimiter + c) for it in items for c in it.choices]
    scores = score_requests(model, requests, batch_size=batch_size, progress=progress, description=task)
    records, k = [], 0
    for i, it in enumerate(items):
        lls = [s.logprob for s in scores[k:k + len(it.choices)]]
        k += len(it.choices)
        records.append({"id": it.source_id or f"row:{i}",
                        "correct": int(_argmax(lls) == it.gold),
                        "correct_norm": int(_argmax([ll / len(c) for ll, c in zip(lls, it.choices)]) == it.gold)})
    return {"task": task, **multiple_choice_metrics(records), "items": records}


def multiple_choice_metrics(items: Sequence[dict]) -> dict:
    """acc and acc_norm from item records (``correct`` / ``correct_norm`` are 0 or 1)."""
    return {"n": len(items), **at_unit_weights(resampled_multiple_choice(items), len(items))}


def evaluate_zeroshot(model, tokenizer, task: str, *, path: str | Path | None = None, limit: int | None = None,
                      batch_size: int = 16, progress: bool = True) -> dict:
    """Load ``task``'s file (local copy or ``path``) and score it; ``limit`` keeps the first items."""
    items = load_zeroshot(task, path, limit=limit)
    return {**evaluate_multiple_choice(model, tokenizer, items, task=task, batch_size=batch_size, progress=progress),
            "description": ZERO_SHOT_TASKS[task].description, "limit": limit}


def _run(model, tokenizer, options: NoOptions, context: TaskContext) -> dict:
    return evaluate_zeroshot(model, tokenizer, context.name, path=context.path, limit=context.limit,
                             batch_size=context.batch_size, progress=context.progress)


#: records ``correct`` and ``correct_norm`` (0 or 1) per question
MULTIPLE_CHOICE = ItemKind("multiple_choice", frozenset({"correct", "correct_norm"}), multiple_choice_metrics,
                           resampled_multiple_choice, headline=("acc", "acc_norm"))

TASKS: tuple[EvaluationTask, ...] = tuple(
    EvaluationTask(t.name, f"{t.description}: acc / acc_norm", _run, data_file=t.default_file,
                   read_data=partial(load_zeroshot, t.name), kind=MULTIPLE_CHOICE)
    for t in ZERO_SHOT_TASKS.values())
"""One task per zero-shot reader; those without a local copy (arc, hellaswag) need ``paths``."""
