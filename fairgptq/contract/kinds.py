"""What a task's item records are, declared by the task: fields, summary, resampled metrics, headline, direction.

Every likelihood task writes per-item records (:mod:`.items`) and declares their :class:`ItemKind`
in its :class:`~fairgptq.contract.tasks.EvaluationTask`.  Everything downstream asks the kind:
the summary recomputed from the records, the paired statistics (each metric as a function of item
weights, resampled by the bootstrap; which metrics are per-pair binary choices for McNemar's test),
which metrics a run records per point and sweeps compare across seeds (``headline``), which way is
better, and where a bias score is ideal.  A plugin task with a record shape of its own declares its
own kind in the same file, and gets all of that without a table elsewhere to edit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

Resampled = Callable[[Sequence[dict]], dict[str, Callable[[np.ndarray], np.ndarray]]]


@dataclass(frozen=True)
class ItemKind:
    """One shape of item records and what is computed from it.

    - ``fields``: keys every record has (records read without their task are recognised by them);
    - ``summarize(items) -> dict``: the task's summary, recomputed from the records;
    - ``resampled(items) -> {metric: f(weights)}``: each metric as a function of a (resamples x items)
      weight matrix, for paired bootstrap intervals (:mod:`fairgptq.statistics`);
    - ``headline``: the metrics a run records per point and sweeps compare across seeds;
    - ``choice_metrics``: shares of a per-item binary ``choice``, tested by exact McNemar;
    - ``lower_is_better``: metrics where a smaller value is the better model (perplexity);
    - ``ideal``: metric -> the value an unbiased model has (50 for a stereotype share);
    - ``bias``: metrics measuring a stereotype preference (an audit calls them more / less biased).

    Every metric with an ideal gets its **distance from parity** beside it (``<metric>_from_parity`` =
    |metric − ideal|), in the summary, the resampled metrics, the headline, ``lower_is_better`` and
    ``bias``: a lower stereotype share is better only down to 50, and a model that moved from 51 to 45
    overshot parity rather than lost bias.  The kind adds them itself (:meth:`__post_init__`), so every
    task with an ``ideal`` gets them without declaring them.
    """

    name: str
    fields: frozenset[str]
    summarize: Callable[[Sequence[dict]], dict]
    resampled: Resampled
    headline: tuple[str, ...]
    choice_metrics: frozenset[str] = frozenset()
    lower_is_better: frozenset[str] = frozenset()
    ideal: Mapping[str, float] = field(default_factory=dict)
    bias: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        scores = {m: v for m, v in self.ideal.items() if not is_parity_distance(m)}
        if not scores:
            return
        distances = {parity_distance(m): v for m, v in scores.items()}
        headline = []
        for m in self.headline:
            headline += [m, parity_distance(m)] if m in scores else [m]
        headline += [d for d in distances if d not in headline]
        summarize, resampled = self.summarize, self.resampled
        set_ = object.__setattr__  # frozen: the derived fields are written once, here
        set_(self, "summarize", lambda items: with_distances(summarize(items), scores))
        set_(self, "resampled", lambda items: _resampled_with_distances(resampled(items), scores))
        set_(self, "headline", tuple(dict.fromkeys(headline)))
        set_(self, "lower_is_better", self.lower_is_better | distances.keys())
        set_(self, "bias", self.bias | {d for m, d in zip(scores, distances) if m in self.bias})
        set_(self, "ideal", {**self.ideal, **{d: 0.0 for d in distances}})

    def matches(self, record: Mapping) -> bool:
        return self.fields <= record.keys()


PARITY_SUFFIX = "_from_parity"


def parity_distance(metric: str) -> str:
    """The name of ``metric``'s distance from parity (``SS`` -> ``SS_from_parity``; ``task.m`` likewise)."""
    return metric + PARITY_SUFFIX


def is_parity_distance(metric: str) -> bool:
    return metric.endswith(PARITY_SUFFIX)


def score_of_distance(metric: str) -> str:
    """The score a distance from parity is taken of (``SS_from_parity`` -> ``SS``)."""
    return metric.removesuffix(PARITY_SUFFIX)


def with_distances(summary: dict, ideal: Mapping[str, float]) -> dict:
    """``summary`` with |score − ideal| beside every score that has an ideal, in nested subsets too
    (``by_category``, ``by_domain``: any dict of dicts)."""
    out = dict(summary)
    for metric, value in summary.items():
        if metric in ideal and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[parity_distance(metric)] = abs(float(value) - ideal[metric])
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            out[metric] = {k: with_distances(v, ideal) for k, v in value.items()}
    return out


def _resampled_with_distances(functions: dict[str, Callable[[np.ndarray], np.ndarray]],
                              ideal: Mapping[str, float]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each score's resampled function, followed by its distance from parity on the *same* resamples,
    so a paired bootstrap of the distance pairs both models' distances resample by resample."""
    out = {}
    for metric, fn in functions.items():
        out[metric] = fn
        if metric in ideal:
            out[parity_distance(metric)] = (lambda f, v: lambda w: np.abs(f(w) - v))(fn, ideal[metric])
    return out
