"""The evaluation-task contract, and the registry's view of every task.

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
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from pydantic import ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from ..core.errors import ConfigError, PluginError
from ..core.plain_numbers import PlainNumbers
from ..datasets_adapters.pairs import Pair

if TYPE_CHECKING:
    from ..registry import Registry
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


Runner = Callable[[Any, Any, Any, TaskContext], dict]


@dataclass(frozen=True)
class EvaluationTask:
    """One named evaluation; ``run(model, tokenizer, options, context)`` returns its result with ``items``.

    ``data_file``: the file it reads when no path is given, relative to a data folder (looked up in
    ``$FAIRGPTQ_DATA_DIR``, the user cache, the hub: :mod:`fairgptq.datasets_adapters.data_location`);
    None with ``needs_data=True`` means the user must give a path (``evaluation.paths.<task>``); ``needs_data=False``: the task brings its own data.
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
    #: what its item records are, and what is computed from them (fairgptq.evaluation.kinds); None for a task
    #: without item records (then it has no paired statistics and no headline metrics)
    kind: "ItemKind | None" = None

    def parameters(self) -> list[str]:
        """``option=default`` for each option (what ``fairgptq plugins`` and ``eval --help`` print)."""
        return [f"{name}={field.default!r}" for name, field in self.options.model_fields.items()]


def registered_tasks(registry: "Registry | None" = None) -> dict[str, EvaluationTask]:
    """Every registered task by name, in registration order (built-ins first)."""
    if registry is None:
        from ..registry import default_registry
        registry = default_registry()
    tasks: dict[str, EvaluationTask] = {}
    for info in registry.all():
        if info.kind != KIND:
            continue
        task = info.factory
        if not isinstance(task, EvaluationTask) or task.name != info.name:
            raise PluginError(f"evaluation task {info.name!r} ({info.origin}) must be an "
                              f"fairgptq.evaluation.tasks.EvaluationTask named {info.name!r}, got {task!r}")
        from .kinds import ItemKind as Kind
        if task.kind is not None and not isinstance(task.kind, Kind):
            raise PluginError(f"evaluation task {info.name!r} ({info.origin}): its kind must be a "
                              f"fairgptq.evaluation.kinds.ItemKind, got {task.kind!r}")
        if not (isinstance(task.options, type) and issubclass(task.options, TaskOptions)):
            raise PluginError(f"evaluation task {info.name!r} ({info.origin}): its options must be a subclass of "
                              f"fairgptq.evaluation.tasks.TaskOptions, got {task.options!r}")
        tasks[info.name] = task
    return tasks


@dataclass(frozen=True)
class OptionSpec:
    """One option name: its single declaration and the tasks that read it."""

    name: str
    field: FieldInfo
    tasks: tuple[str, ...]
    model: type[TaskOptions]  # the first options model declaring it: validates it, validators included

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)

    def readers(self) -> str:
        """The tasks reading this option, the first two and a count when there are many."""
        if len(self.tasks) <= 3:
            return ", ".join(self.tasks)
        return f"{', '.join(self.tasks[:2])} and {len(self.tasks) - 2} more"

    def validate(self, value: Any) -> Any:
        """The value as the declaring model reads it; a pydantic ValidationError when refused."""
        return getattr(self.model.model_validate({self.name: value}), self.name)


def _signature(field: FieldInfo) -> str:
    return repr((field.annotation, field.default, field.default_factory, field.metadata))


def option_specs(tasks: Mapping[str, EvaluationTask]) -> dict[str, OptionSpec]:
    """Every option of ``tasks`` (first declaration order); differing declarations of one name are refused."""
    fields: dict[str, FieldInfo] = {}
    models: dict[str, type[TaskOptions]] = {}
    readers: dict[str, list[str]] = {}
    for task in tasks.values():
        for name, field in task.options.model_fields.items():
            if name in RESERVED:
                raise PluginError(f"evaluation task {task.name!r}: option name {name!r} is taken by a setting every "
                                  f"task shares ({', '.join(sorted(RESERVED))}); rename the option")
            if name in fields and _signature(fields[name]) != _signature(field):
                raise PluginError(f"evaluation option {name!r} is declared differently by tasks "
                                  f"{readers[name][0]!r} and {task.name!r}; options are one flat namespace, so a "
                                  f"shared option must be declared once (inherit its options model) or renamed")
            fields.setdefault(name, field)
            models.setdefault(name, task.options)
            readers.setdefault(name, []).append(task.name)
    return {name: OptionSpec(name, field, tuple(readers[name]), models[name]) for name, field in fields.items()}


def describe_options(specs: Mapping[str, OptionSpec]) -> str:
    """``name (task, task, ...)`` per option, for error messages naming what is accepted."""
    return "; ".join(f"{s.name} ({s.readers()})" for s in specs.values()) or "none"


def option_error(err: dict) -> str:
    """One pydantic error of an option value as a short sentence (a validator's own message as it is)."""
    ctx = err.get("ctx") or {}
    if err["type"] in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return f"{err['msg']} (got {err.get('input')!r})"


def resolve_options(given: Mapping[str, Any], tasks: Mapping[str, EvaluationTask]) -> dict[str, Any]:
    """Every option of ``tasks``: the validated value of each given one, the default of the rest.

    A key no task declares, or a value its declaration refuses, is a ConfigError naming the key
    and the options each task accepts.
    """
    specs = option_specs(tasks)
    problems = []
    values = {}
    for key, value in given.items():
        if key not in specs:
            problems.append(f"unknown evaluation option {key!r}; task options: {describe_options(specs)}")
            continue
        try:
            values[key] = specs[key].validate(value)
        except ValidationError as e:
            problems.append(f"evaluation option {key!r}: {option_error(e.errors()[0])}")
    if problems:
        raise ConfigError("; ".join(problems))
    return {name: values[name] if name in values else spec.default for name, spec in specs.items()}


def options_for(task: EvaluationTask, values: Mapping[str, Any]) -> TaskOptions:
    """``task``'s options model filled from the flat option values (see :func:`resolve_options`)."""
    return task.options.model_validate({k: v for k, v in values.items() if k in task.options.model_fields})
