"""From a pipeline's objective / pair-set entries to plugin keyword arguments (shared by checks and runner).

The typed objective keys (α, roles, layers, ...) are fair_pairs' settings; another objective
plugin receives only the keys its factory accepts.  A key the user wrote explicitly that
the factory does not take is an error, never silently dropped.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .schema import CalibrationSpec, ObjectiveSpec

_TYPED = ("alpha", "roles", "layers", "k", "layer_alpha", "mode", "on_overshoot", "alignment", "calibrate_with_pairs")
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
    """Keyword arguments for an objective factory; ``pairs`` is the resolved pair list (or a stand-in)."""
    names, var_kw = accepted(factory)
    takes = (lambda n: var_kw or n in names)
    explicit = spec.model_fields_set
    kwargs: dict[str, Any] = {}
    for key in _TYPED:
        value = getattr(spec, key)
        if takes(key):
            if key == "layer_alpha" and value is None:
                continue
            kwargs[key] = value
        elif key in explicit:
            raise ArgumentError(key, f"objective {spec.name!r} does not take this setting; "
                              f"its parameters: {', '.join(sorted(names)) or 'none'}")
    if takes("pairs"):
        if spec.pairs is None:
            raise ArgumentError("pairs", f"objective {spec.name!r} needs a pair set; name one of calibration.pairs")
        kwargs["pairs"] = pairs
        if takes("pair_set"):
            kwargs["pair_set"] = spec.pairs
        for key in ("batch_size", "max_length"):
            if takes(key):
                kwargs[key] = getattr(calibration, key)
    elif spec.pairs is not None:
        raise ArgumentError("pairs", f"objective {spec.name!r} does not use pair sets")
    unknown = [k for k in spec.params if not takes(k)]
    if unknown:
        raise ArgumentError("params", f"objective {spec.name!r} has no parameter(s) {unknown}; "
                          f"its parameters: {', '.join(sorted(names)) or 'none'}")
    kwargs.update(spec.params)
    return kwargs
