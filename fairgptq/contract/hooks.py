"""The hooks a plugin implements, one per plugin kind (as pytest's hookspecs).

fairgptq knows five plugin kinds.  A plugin is any module or object with functions
marked ``@hookimpl`` and named after a hook below; each hook returns a mapping from a
public name (used in YAML pipelines) to a factory (a class or function called with the
pipeline's keyword parameters).

- pair sources   ``fairgptq_pair_sources``  factory(**params) -> list[Pair]
- objectives     ``fairgptq_objectives``    factory(**params) -> Objective (core/objective.py): terms of the
  layer objective (a quadratic H_bias, a linear term), with a ``Params`` settings model the pipeline asks
- backends       ``fairgptq_backends``      factory(**params) -> Backend (core/backend.py)
- architectures  ``fairgptq_architectures`` config.model_type -> ArchSpec (core/architectures.py), not a factory
- evaluation tasks ``fairgptq_evaluation_tasks``  an EvaluationTask (contract/tasks.py), not a
  factory: its options model, data file and ``run``

A factory's settings are its ``params`` in a pipeline, checked by its settings model: the
pydantic class in its ``Params`` attribute where it declares one (fair_pairs: FairPairParams),
else a model read off its signature and type hints (contract/params.py).  An objective
also receives from the run, when it names them as parameters, ``pairs`` (the pair list),
``pair_set``, ``batch_size`` and ``max_length``.

Built-ins register through these same hooks.  Third-party packages register a module
under the entry-point groups ``fairgptq.pair_sources``, ``fairgptq.objectives``,
``fairgptq.backends``, ``fairgptq.architectures`` or ``fairgptq.evaluation_tasks``; a pipeline may
also name modules to import (``plugins: [my.module]``).
Unknown hook names in a plugin are refused at start-up (``check_pending``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import pluggy

PROJECT = "fairgptq"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Factory = Callable[..., Any]


@hookspec
def fairgptq_pair_sources() -> Mapping[str, Factory]:
    """Pair sources by name: ``factory(**params) -> list[Pair]`` (contract/pairs.py)."""


@hookspec
def fairgptq_objectives() -> Mapping[str, Factory]:
    """Objectives by name: ``factory(**params) -> Objective``, adding quadratic and/or linear terms."""


@hookspec
def fairgptq_backends() -> Mapping[str, Factory]:
    """Backends by name: ``factory(**params) -> Backend`` (where and how modules are solved and run)."""


@hookspec
def fairgptq_architectures() -> Mapping[str, Any]:
    """Model families by ``config.model_type``: an ``ArchSpec`` each (layers, roles, weight layout)."""


@hookspec
def fairgptq_evaluation_tasks() -> Mapping[str, Any]:
    """Evaluation tasks by name: each an ``EvaluationTask`` (fairgptq/contract/tasks.py)."""
