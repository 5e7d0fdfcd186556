"""Reading a pipeline file: YAML, ``--set`` overrides, schema, checks, sweep expansion; one error listing all."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from ..core.errors import ConfigError
from . import keypath
from .checks import Problem, check
from .messages import problems_from
from .schema import PipelineSpec
from .sweep import SweepPoint, expand, single, with_repeats


class PipelineError(ConfigError):
    """A pipeline file with problems; the message lists each as ``path: what is wrong``."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source, self.problems = source, problems
        lines = [f"{path}: {msg}" for path, msg in problems]
        head = f"{source}: " + ("1 problem" if len(lines) == 1 else f"{len(lines)} problems")
        super().__init__(head + "\n  " + "\n  ".join(lines))


@dataclass
class Pipeline:
    """A validated pipeline: the spec, what the user wrote (after overrides), and its sweep points."""

    spec: PipelineSpec
    raw: dict
    source: str
    points: list[SweepPoint] = field(default_factory=list)

    def resolved(self) -> dict:
        """The full configuration with every default filled in (saved with each run)."""
        return self.spec.model_dump(mode="json")


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a pipeline file is a mapping of sections (model, calibration, ...), "
                          f"got {type(data).__name__}")
    return data


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """``key.path=value`` pairs (values read as YAML scalars: 3, 0.5, true, [1, 2]) on a copy."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write it as key.path=value, e.g. objectives[0].alpha=0.5")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from e
        keypath.set_(out, key.strip(), value)
    return out


def validate(raw: dict, source: str = "pipeline", *, environment: bool = True) -> PipelineSpec:
    """Schema then checks; raises :class:`PipelineError` with every problem found."""
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as e:
        raise PipelineError(source, problems_from(e, PipelineSpec)) from None
    if environment:
        from ..registry import default_registry
        problems = check(spec, default_registry())
        if problems:
            raise PipelineError(source, problems)
    return spec


def _validate_points(spec: PipelineSpec, raw: dict, source: str, environment: bool) -> list[SweepPoint]:
    if spec.sweep is None:
        return [] if spec.repeats is None else _validated(with_repeats(single(raw), spec.repeats.seeds), source,
                                                          environment)
    resolved = spec.model_dump(mode="json")
    problems: list[Problem] = []
    for key in spec.sweep.keys():
        try:
            keypath.get(resolved, key)
        except (KeyError, ConfigError):
            where = "grid" if key in spec.sweep.grid else "cases"
            problems.append((f"sweep.{where}[{key!r}]", "no such key in the pipeline (write paths as "
                                                        "section.key or list[0].key)"))
    if problems:
        raise PipelineError(source, problems)
    points = expand(raw, spec.sweep.grid, spec.sweep.cases)
    if spec.repeats is not None:
        points = with_repeats(points, spec.repeats.seeds)
    return _validated(points, source, environment)


def _validated(points: list[SweepPoint], source: str, environment: bool) -> list[SweepPoint]:
    for point in points:
        try:
            validate(point.raw, source, environment=environment)
        except PipelineError as e:
            raise PipelineError(source, [(f"sweep point {point.name}: {p}", m) for p, m in e.problems]) from None
    return points


def load_pipeline(path: str | Path, overrides: Iterable[str] = (), *, environment: bool = True) -> Pipeline:
    """Read, override and validate a pipeline file (nothing is loaded or run)."""
    source = str(path)
    raw = apply_overrides(read_yaml(path), overrides)
    spec = validate(raw, source, environment=environment)
    return Pipeline(spec, raw, source, _validate_points(spec, raw, source, environment))
