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

    def matches(self, record: Mapping) -> bool:
        return self.fields <= record.keys()
