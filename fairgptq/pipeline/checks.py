"""Checks a schema cannot make: plugin names, references between sections, files that must exist.

They run after the schema and before any model loads; each problem is (YAML path, message).
"""
from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any

from ..core.errors import FairGPTQError
from ..registry import Registry
from .arguments import PATH_KEYS, ArgumentError, expand_path, objective_arguments
from .objective_settings import builds_hessian, needs_gradients
from .messages import Problem
from .schema import PipelineSpec


def _plugin(registry: Registry, kind: str, name: str, path: str, problems: list[Problem]) -> Any | None:
    try:
        return registry.get(kind, name).factory
    except FairGPTQError as e:
        problems.append((path, str(e)))
        return None


def _file(value: Any, path: str, problems: list[Problem]) -> None:
    if isinstance(value, str) and not expand_path(value).exists():
        unset = [v for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value) if v not in os.environ]
        if unset:
            problems.append((path, f"{value}: the variable {unset[0]} is not set; set it (FAIRGPTQ_DATA_DIR: the "
                                   f"data folder; scripts/test.sh and demo.sh set it to ../shared/data)"))
        else:
            problems.append((path, f"file not found: {expand_path(value)}"))


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "$")) or name.endswith(".gguf")


#: the tasks that score CrowS-Pairs' English pairs; only the second can hold out a split
_CROWS_TASKS = ("crows_pairs", "crows_pairs_english")


def evaluated_crows_pairs(spec: PipelineSpec, index: int) -> list[Problem]:
    """CrowS-Pairs as a calibration source of objective ``index`` while the evaluation scores it: refused.

    Calibrating on the evaluation's own pairs measures the fit, not debiasing.  Allowed only where the
    evaluation scores the held-out half (``crows_pairs_english`` with ``pair_split: holdout``) and the set
    draws from the other (``split: calibration``, same ``holdout_fraction``)."""
    obj = spec.objectives[index]
    evaluated = [t for t in spec.evaluation.tasks if t in _CROWS_TASKS]
    if not evaluated:
        return []
    options = spec.evaluation.options()
    problems = []
    for name in obj.pair_set_names():
        ps = spec.calibration.pairs[name]
        if ps.source != "crows_pairs":
            continue
        held_out = (evaluated == ["crows_pairs_english"] and options.get("pair_split") == "holdout"
                    and ps.split == "calibration"
                    and ps.holdout_fraction == options.get("holdout_fraction", 0.5))
        if not held_out:
            problems.append((f"objectives[{index}].pairs", f"pair set {name!r} is CrowS-Pairs, which the evaluation "
                             f"also scores ({', '.join(evaluated)}): calibrating on the evaluation's pairs measures the "
                             f"fit, not debiasing. Calibrate on other sources (stereoset, redditbias, holistic_bias, "
                             f"templates), or evaluate crows_pairs_english with pair_split: holdout while this set "
                             f"uses split: calibration"))
    return problems


def check(spec: PipelineSpec, registry: Registry) -> list[Problem]:
    """Every problem with plugins, references and files in a schema-valid pipeline."""
    problems: list[Problem] = []
    for i, mod in enumerate(spec.plugins):
        try:
            registry.register_module(mod)
        except FairGPTQError as e:
            problems.append((f"plugins[{i}]", str(e)))
    if _looks_like_path(spec.model.name) and not expand_path(spec.model.name).exists():
        problems.append(("model.name", f"model path not found: {expand_path(spec.model.name)}"))

    cal = spec.calibration
    for name, ps in cal.pairs.items():
        base = f"calibration.pairs.{name}"
        _plugin(registry, "pair_sources", ps.source, f"{base}.source", problems)
        for key in PATH_KEYS:
            _file(ps.params.get(key), f"{base}.params.{key}", problems)
    if cal.text is not None and cal.text.n > 0:
        from ..datasets_adapters.data_location import locate, missing_message
        relative = f"wikitext2/{cal.text.split}.txt"
        text_file = expand_path(cal.text.path) if cal.text.path else locate(relative)
        if text_file is None:
            problems.append(("calibration.text", f"{missing_message(relative)} (or give calibration.text.path)"))
        elif not Path(text_file).exists():
            problems.append(("calibration.text", f"WikiText-2 file not found: {text_file}; give calibration.text.path "
                                                 f"an existing file"))
        else:
            from .preflight import data_problem
            problem = data_problem(partial(_wikitext_text, cal.text.split), Path(text_file), "calibration text")
            if problem:
                problems.append(("calibration.text", problem))

    hessian_from_objectives = False
    for i, obj in enumerate(spec.objectives):
        base = f"objectives[{i}]"
        factory = _plugin(registry, "objectives", obj.name, f"{base}.name", problems)
        if factory is None:
            continue
        missing = [name for name in obj.pair_set_names() if name not in cal.pairs]
        if missing:
            problems.append((f"{base}.pairs", f"no pair set {missing[0]!r} under calibration.pairs; defined: "
                                              f"{', '.join(cal.pairs) or 'none'}"))
            continue
        problems += evaluated_crows_pairs(spec, i)
        try:
            objective_arguments(obj, factory, cal, pairs=[])
        except ArgumentError as e:
            problems.append((f"{base}.{e.key}", e.message))
            continue
        hessian_from_objectives |= builds_hessian(registry, obj.name, obj.params)
        if spec.model.onload == "always" and needs_gradients(registry, obj.name, obj.params):
            problems.append((f"{base}.name", f"objective {obj.name!r} needs gradients of a score through the whole "
                                             f"model, and model.onload: always holds one decoder layer at a time; "
                                             f"set model.onload: never (or auto with enough max_memory) or leave "
                                             f"the objective out"))
    if not hessian_from_objectives and not (cal.text is not None and cal.text.n > 0):
        problems.append(("calibration", "no data for H: set calibration.text.n > 0, or give an objective whose "
                                        "own sentences also build H (fair_pairs: calibrate_with_pairs: true)"))

    _plugin(registry, "backends", spec.backend.name, "backend.name", problems)

    from ..evaluation.task_registry import registered_tasks
    tasks = list(registered_tasks(registry))
    for i, task in enumerate(spec.evaluation.tasks):
        if task not in tasks:
            problems.append((f"evaluation.tasks[{i}]", f"unknown task {task!r}; tasks: {', '.join(tasks)}"))
    for task, value in spec.evaluation.paths.items():
        if task not in tasks:
            problems.append((f"evaluation.paths.{task}", f"unknown task {task!r}; tasks: {', '.join(tasks)}"))
        _file(value, f"evaluation.paths.{task}", problems)
    if isinstance(spec.evaluation.limit, dict):
        for task in spec.evaluation.limit:
            if task not in spec.evaluation.tasks:
                problems.append((f"evaluation.limit.{task}", f"not one of this pipeline's tasks "
                                                             f"({', '.join(spec.evaluation.tasks) or 'none'})"))
    if not problems:  # the environment checks assume a consistent pipeline
        from .preflight import environment_problems
        problems += environment_problems(spec, registry)
    return problems


def _wikitext_text(split: str, path: Path) -> str:
    """The calibration split's text as the run reads it (empty when the file holds only blank lines)."""
    from ..datasets_adapters.wikitext import read_wikitext
    return read_wikitext(split, path).strip()
