"""Reading a pipeline file: YAML, ``--set`` overrides, schema, checks, sweep expansion; one error listing all."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from ..core.errors import ConfigError
from ..registry import Registry, pipeline_registry, scoped, scoped_registry
from . import keypath
from .arguments import PATH_KEYS, expand_path
from .checks import check
from .messages import PipelineError, Problem, problems_from
from .schema import PipelineSpec
from .sweep import SweepPoint, expand, single, with_repeats


@dataclass
class Pipeline:
    """A validated pipeline: the spec, what the user wrote (after overrides), and its sweep points."""

    spec: PipelineSpec
    raw: dict
    source: str
    points: list[SweepPoint] = field(default_factory=list)
    registry: Registry | None = None  # its own: the built-ins, entry points and its plugins: modules

    @property
    def folder(self) -> Path:
        """The pipeline file's folder: relative paths inside it resolve here, and --force never deletes it."""
        return Path(self.source).resolve().parent

    def resolved(self) -> dict:
        """The full configuration with every default filled in (saved with each run)."""
        return self.spec.model_dump(mode="json")


MAX_YAML_VALUES = 100_000  # a pipeline has hundreds; aliases can make a few lines expand to billions


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one, silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, flattened by construct_mapping
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: construct_mapping says so below
            continue
        if first != key_node.start_mark.line + 1:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r} (first at line {first}); "
                              f"YAML would keep only the last one, so remove one of them")
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values the document holds once every alias is expanded (what deep copies and dumps would build)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_YAML_VALUES + 1  # a cycle (a recursive alias) counts as too big
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_YAML_VALUES + 1)
    return memo[id(node)]


def parse_yaml(text: str, source: str) -> Any:
    """YAML text to data: safe types only, no duplicate keys, no alias bombs."""
    try:
        loader = _StrictLoader(text)  # its reader refuses control characters (a NUL byte) at once
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise ConfigError(f"{source}: the YAML expands to more than {MAX_YAML_VALUES} values (anchors and "
                              f"aliases repeating each other?); a pipeline is far smaller")
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if not str(e).startswith(source) else str(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply to be a pipeline") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save the "
                          f"pipeline as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the pipeline file ({e.strerror or e})") from None
    data = parse_yaml(text, str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a pipeline file is a mapping of sections (model, calibration, ...), "
                          f"got {type(data).__name__}")
    return data


def _relative_to(base: Path, value: str, *, only_if_exists: bool = False) -> str:
    """``value`` joined to ``base`` when it is a relative path (after ``~`` / ``$VAR`` expansion)."""
    expanded = expand_path(value)
    if expanded.is_absolute() or value.startswith(("~", "$")):
        return value
    if only_if_exists and not (base / expanded).exists():
        return value
    return str(base / expanded)


def resolve_relative_paths(spec: PipelineSpec, base: Path) -> None:
    """Relative data and model paths in a pipeline mean "next to the pipeline file", not the cwd.

    ``output`` (like ``--out``) stays relative to the working directory.
    """
    name = spec.model.name
    spec.model.name = _relative_to(base, name, only_if_exists=not name.startswith(("./", "../")))
    here = Path(name)
    if (spec.model.name == name and not here.is_absolute() and not name.startswith(("~", "$"))
            and here.exists() and base.resolve() != Path.cwd().resolve()):
        raise ConfigError(f"model.name {name!r}: there is no such folder beside the pipeline ({base}), only in the "
                          f"working directory; relative paths in a pipeline mean the pipeline's folder. Write "
                          f"{str(here.resolve())!r}, or the path relative to {base}")
    for ps in spec.calibration.pairs.values():
        for key in PATH_KEYS:
            if isinstance(ps.params.get(key), str):
                ps.params[key] = _relative_to(base, ps.params[key])
    if spec.calibration.text is not None and spec.calibration.text.path:
        spec.calibration.text.path = _relative_to(base, spec.calibration.text.path)
    spec.evaluation.paths = {k: _relative_to(base, v) for k, v in spec.evaluation.paths.items()}


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """``key.path=value`` pairs (values read as YAML scalars: 3, 0.5, true, [1, 2]) on a copy."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write it as key.path=value, e.g. objectives[0].params.alpha=0.5")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from e
        keypath.set_(out, key.strip(), value)
    return out


def own_registry(raw: Any) -> Registry:
    """A pipeline's own registry, with the plugin modules its raw mapping names (a malformed ``plugins:`` is left
    for the schema to report)."""
    plugins = raw.get("plugins") if isinstance(raw, dict) else None
    return pipeline_registry(plugins if isinstance(plugins, list) else ())


def validate(raw: dict, source: str = "pipeline", *, environment: bool = True,
             registry: Registry | None = None) -> PipelineSpec:
    """Schema then checks; raises :class:`PipelineError` with every problem found.

    Plugins named by the pipeline are registered in ``registry`` (default: the one in use inside a
    :func:`~fairgptq.registry.scoped` block, else a fresh one for this pipeline), never in the process's.
    """
    if registry is None:
        registry = scoped_registry() or own_registry(raw)
    with scoped(registry):
        try:
            spec = PipelineSpec.model_validate(raw)
        except ValidationError as e:
            raise PipelineError(source, problems_from(e, PipelineSpec)) from None
        if Path(source).is_file():
            resolve_relative_paths(spec, Path(source).resolve().parent)
        if environment:
            problems = check(spec, registry)
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
    """Read, override and validate a pipeline file (nothing is loaded or run), with a registry of its own."""
    source = str(path)
    raw = apply_overrides(read_yaml(path), overrides)
    registry = own_registry(raw)
    with scoped(registry):
        spec = validate(raw, source, environment=environment, registry=registry)
        points = _validate_points(spec, raw, source, environment)
    if environment and points:
        from .preflight import output_problems
        problems = output_problems(Path(spec.output or Path("runs") / spec.name), [p.name for p in points])
        if problems:
            raise PipelineError(source, problems)
    return Pipeline(spec, raw, source, points, registry)
