"""From a pipeline's objective / pair-set entries to plugin keyword arguments (shared by checks and runner).

An objective's settings were validated by its own model in the schema (``params``); what is
left here is what the run supplies: the pair list, the set's name, batch size and length.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .schema import CalibrationSpec, ObjectiveSpec

PATH_KEYS = ("path", "file")


class ArgumentError(ConfigError):
    """A bad objective entry; ``key`` is the offending key inside the entry."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def accepted(factory: Any) -> tuple[set[str], bool]:
    """(parameter names, whether it takes **kwargs)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    return ({p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)},
            any(p.kind is p.VAR_KEYWORD for p in params))


def expand_path(value: str) -> Path:
    """``~`` and ``$VARS`` expanded: pipeline files may say ``$FAIRGPTQ_DATA_DIR/...``."""
    return Path(os.path.expandvars(os.path.expanduser(value)))


def with_expanded_paths(params: dict[str, Any]) -> dict[str, Any]:
    return {k: str(expand_path(v)) if k in PATH_KEYS and isinstance(v, str) else v for k, v in params.items()}


def objective_arguments(spec: ObjectiveSpec, factory: Any, calibration: CalibrationSpec,
                        pairs: Any = None) -> dict[str, Any]:
    """Keyword arguments for an objective factory: its validated settings plus what the run supplies.

    ``pairs`` is the resolved pair list (or a stand-in); the set's name, batch size and maximum
    length go to a factory that takes them.
    """
    names, _ = accepted(factory)
    takes = names.__contains__  # what the run supplies goes to named parameters only, never into **settings
    kwargs: dict[str, Any] = dict(spec.params)
    if takes("pairs"):
        if spec.pairs is None:
            raise ArgumentError("pairs", f"objective {spec.name!r} needs a pair set; name one of calibration.pairs")
        kwargs["pairs"] = pairs
        if takes("pair_set"):
            kwargs["pair_set"] = spec.pair_set_label()
        for key in ("batch_size", "max_length"):
            if takes(key):
                kwargs[key] = getattr(calibration, key)
    elif spec.pairs is not None:
        raise ArgumentError("pairs", f"objective {spec.name!r} does not use pair sets")
    return kwargs
