"""The registry's view of every evaluation task, and the one flat namespace of their options.

Options form one flat namespace: the keys of a pipeline's ``evaluation:`` section,
``evaluate(**options)`` and ``fairgptq eval --set``.  An option several tasks read
(``holdout_fraction``) is declared once, in a small options model the tasks inherit, so it has
one default; two tasks declaring one name differently are refused.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from ..contract.kinds import ItemKind
from ..contract.tasks import KIND, RESERVED, EvaluationTask, TaskOptions
from ..core.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from ..registry import Registry


def registered_tasks(registry: "Registry | None" = None) -> dict[str, EvaluationTask]:
    """Every registered task by name, in registration order (built-ins first)."""
    if registry is None:
        from ..registry import default_registry
        registry = default_registry()
    tasks: dict[str, EvaluationTask] = {}
    infos = [info for info in registry.all() if info.kind == KIND]
    kinds = {i.factory.kind.name: i.factory.kind for i in infos
             if isinstance(i.factory, EvaluationTask) and isinstance(i.factory.kind, ItemKind)}
    for info in registry.all():
        if info.kind != KIND:
            continue
        task = info.factory
        if not isinstance(task, EvaluationTask) or task.name != info.name:
            raise PluginError(f"evaluation task {info.name!r} ({info.origin}) must be an "
                              f"fairgptq.contract.tasks.EvaluationTask named {info.name!r}, got {task!r}")
        if isinstance(task.kind, str):  # a registered kind by name: the plugin needs no import of it
            if task.kind not in kinds:
                raise PluginError(f"evaluation task {info.name!r} ({info.origin}): no registered task declares the "
                                  f"kind {task.kind!r}; kinds: {', '.join(sorted(kinds))}")
            task = replace(task, kind=kinds[task.kind])
        if task.kind is not None and not isinstance(task.kind, ItemKind):
            raise PluginError(f"evaluation task {info.name!r} ({info.origin}): its kind must be a "
                              f"fairgptq.contract.kinds.ItemKind or a kind's name, got {task.kind!r}")
        if not (isinstance(task.options, type) and issubclass(task.options, TaskOptions)):
            raise PluginError(f"evaluation task {info.name!r} ({info.origin}): its options must be a subclass of "
                              f"fairgptq.contract.tasks.TaskOptions, got {task.options!r}")
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
