"""The evaluation-task contract: what a task module defines (the registry's view of every task is
``fairgptq.evaluation.task_registry``).

A task is one module-level :class:`EvaluationTask`: its name, a one-line description
(``fairgptq eval --help`` lists them), its options model, the data file it reads by default,
and ``run(model, tokenizer, options, context) -> dict``, which loads the data, scores it and
returns the summary with an ``items`` list of per-item records (:mod:`.items` says which record
shapes get statistics).  Built-in and third-party tasks register the same way, through the
``fairgptq_evaluation_tasks`` hook, so :func:`~fairgptq.evaluation.suite.evaluate`, the
pipeline schema and the CLI learn a new task from its module alone.

Options form one flat namespace: the keys of a pipeline's ``evaluation:`` section,
``evaluate(**options)`` and ``fairgptq eval --set``.  An option several tasks read
(``holdout_fraction``) is declared once, in a small options model the tasks inherit, so it has
one default; two tasks declaring one name differently are refused.  What every task gets alike
(its data path, item limit, batch size, the calibration pairs to guard against) is not an option
but the :class:`TaskContext`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import ConfigDict

from ..core.plain_numbers import PlainNumbers

from .pairs import Pair

from .kinds import ItemKind

KIND = "evaluation_tasks"
RESERVED = frozenset({"tasks", "float_baseline", "plain_baseline", "batch_size", "limit", "paths", "pair_gap",
                      "progress", "calibration", "on_overlap", "registry", "model", "tokenizer"})
"""Names an option cannot take: the settings every task shares (evaluate()'s keywords, the schema's keys)."""


class TaskOptions(PlainNumbers):
    """Base of every task's options model: unknown keys are errors, defaults are validated, values fixed, and
    numbers are numbers (``--set holdout_fraction=true`` or ``=.nan`` is refused, not read as 1 or NaN)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class NoOptions(TaskOptions):
    """The options of a task that has none beyond the shared context."""


@dataclass(frozen=True)
class TaskContext:
    """What :func:`~fairgptq.evaluation.suite.evaluate` hands every task besides its options.

    ``path``: the file (or folder) given for this task, None for its local default copy;
    ``limit``: score the first N items only; ``calibration``: the pairs the model was calibrated
    on (or their ids / texts), None when unknown, so a task scoring bias pairs can refuse an
    overlap (``on_overlap="error"``) or only warn (``"warn"``).
    """

    name: str
    path: Path | None = None
    limit: int | None = None
    batch_size: int = 16
    progress: bool = True
    calibration: Sequence[Pair | str] | None = None
    on_overlap: str = "error"
    #: ``score_sentences(model, tokenizer, sentences) -> [score]`` (``.logprob``, ``.n_tokens``): the one
    #: scorer of the built-in tasks, with this context's batch size and progress bar (None outside ``evaluate``)
    score_sentences: Callable[[Any, Any, Sequence[str]], list] | None = None


Runner = Callable[[Any, Any, Any, TaskContext], dict]


@dataclass(frozen=True)
class EvaluationTask:
    """One named evaluation; ``run(model, tokenizer, options, context)`` returns its result with ``items``.

    ``data_file``: the file it reads when no path is given, relative to a data folder (looked up in
    ``$FAIRGPTQ_DATA_DIR``, the user cache, the hub: :mod:`fairgptq.datasets_adapters.data_location`);
    None with ``needs_data=True`` means the user must give a path (``evaluation.paths.<task>``);
    ``needs_data=False``: the task brings its own data.
    ``read_data(path)`` reads the task's items as ``run`` will, without a model (``path`` None: the
    local copy), raising on an unreadable file: ``fairgptq validate`` calls it for every task, so a
    header-only, empty, mis-encoded or misplaced data file is refused before any quantization.
    """

    name: str
    description: str
    run: Runner
    options: type[TaskOptions] = NoOptions
    data_file: str | None = None
    needs_data: bool = True
    read_data: Callable[[Path | None], Sequence[Any] | str] | None = None
    #: what its item records are, and what is computed from them (fairgptq.contract.kinds): an ItemKind, or the
    #: name of a registered task's kind (``"preference"``, ``"pair_choice"``); None for a task without item
    #: records (then it has no paired statistics and no headline metrics).  A task whose result has ``items``
    #: and a kind gets the kind's summary of them, under its own keys
    kind: ItemKind | str | None = None

    def parameters(self) -> list[str]:
        """``option=default`` for each option (what ``fairgptq plugins`` and ``eval --help`` print)."""
        return [f"{name}={field.default!r}" for name, field in self.options.model_fields.items()]
