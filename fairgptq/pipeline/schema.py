"""The pipeline file's schema (pydantic): every key, its type and its range, checked before any model loads.

Every model forbids unknown keys, so a typo is an error naming its YAML path instead of a
setting silently ignored.  A plugin's ``params`` (an objective's, a pair source's, a
backend's) are checked by that plugin's own settings model (fairgptq.contract.params), so
a setting has one definition and one check, wherever it is used.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationError, ValidationInfo,
                      create_model, field_validator, model_serializer, model_validator)

from ..core.architectures import ROLES
from ..core.plain_numbers import PlainNumbers
from ..core.errors import ConfigError, FairGPTQError
from ..core.quantizer import OneColumnOrder, QuantConfig
from ..objectives.pair_activations import ALIGNMENTS

Role = Literal[ROLES]  # type: ignore[valid-type]


class Strict(PlainNumbers):
    """Unknown keys are errors; defaults are validated too; numbers are numbers (no true, .inf or .nan)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _plugin_params(kind: str, name: str | None, params: dict[str, Any], *, defaults: bool = False) -> dict[str, Any]:
    """``params`` validated by the named plugin's own settings model (fairgptq.contract.params).

    Errors carry the YAML path (``objectives[0].params.alpha``).  An unknown plugin name is left
    to the checks, which report it at the entry's ``name``/``source``.  ``defaults`` fills in the
    settings the user left out, so the saved config says what ran (objectives: the reports read
    α, roles and layers from it); pair sources and backends keep what was written.
    """
    from ..contract.params import SUPPLIED, params_model, setting_names, unknown_settings
    from ..registry import default_registry
    if name is None:
        return params
    try:
        factory = default_registry().get(kind, name).factory
    except FairGPTQError:
        return params
    model = params_model(factory, SUPPLIED.get(kind, ()))
    unknown = unknown_settings(model, params)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} of {kind[:-1].replace('_', ' ')} {name!r}; its settings: "
                         f"{', '.join(setting_names(model)) or 'none'}")
    return model.model_validate(params).model_dump(exclude_unset=not defaults, by_alias=True)


def _check_memory_size(v: str | int | None) -> str | int | None:
    from ..onload.memory import parse_size
    if v is not None:
        try:
            size = parse_size(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if size <= 0:
            raise ValueError(f"must be a positive size such as 8GiB or 500MB (got {v!r})")
    return v


class ModelSpec(Strict):
    """Which model: a hub id, a local folder or .gguf file, or the alias ``smollm2``.

    ``onload``: ``auto`` quantizes in memory when the model fits (``max_memory`` and the memory
    free now) and layer by layer from its safetensors shards otherwise; ``always`` / ``never`` force
    one path (``never`` refuses a model larger than ``max_memory``).
    """

    name: str
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"
    onload: Literal["auto", "always", "never"] = "auto"
    max_memory: Annotated[str | int | None, AfterValidator(_check_memory_size)] = None


class PairSetSpec(Strict):
    """A named pair set: a pair-source plugin, its parameters, and a deterministic sample of it."""

    source: str
    params: dict[str, Any] = Field(default_factory=dict)
    #: pairs drawn (a count), or every pair of the split: ``all`` (or none given)
    n: PositiveInt | None = None
    seed: int = 0
    stratify: bool = True
    split: Literal["all", "calibration", "holdout"] = "all"
    #: what the split hashes: the item id, or (StereoSet) the target term; match evaluation.stereoset_split_by
    split_by: Literal["item", "target"] = "item"
    holdout_fraction: float = Field(0.5, gt=0, lt=1)

    @field_validator("n", mode="before")
    @classmethod
    def _all(cls, n: Any) -> Any:
        return None if n == "all" else n

    @field_validator("params")
    @classmethod
    def _settings(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _plugin_params("pair_sources", info.data.get("source"), params)


class TextSpec(Strict):
    """General text windows for H (GPTQ's recipe), on top of or instead of the pair sentences."""

    source: Literal["wikitext2"] = "wikitext2"
    path: str | None = None
    split: Literal["valid", "test"] = "valid"
    n: int = Field(0, ge=0)
    seqlen: PositiveInt = 512
    seed: int = 0
    batch_size: PositiveInt = 8


class CalibrationSpec(Strict):
    pairs: dict[str, PairSetSpec] = Field(default_factory=dict)
    text: TextSpec | None = None
    max_length: PositiveInt = 128
    batch_size: PositiveInt = 32


# The quantization section is the engine's QuantConfig field for field (types, ranges, defaults, checks):
# a new setting is one field in core/quantizer.py.  Validated here as a plain model, so a bad value gets its
# YAML path; pipeline.build.quant_config turns it into the engine's config in one step.
class _QuantizationChecks(Strict, OneColumnOrder):
    """QuantConfig's column-order rules (default resolution and the cross-field check), so the YAML section
    resolves exactly as QuantConfig does and a contradiction gets its YAML path here, not at build time."""


QuantizationSpec = create_model("QuantizationSpec", __base__=_QuantizationChecks, __doc__="The quantization: section.",
                                **{n: (f.annotation, f) for n, f in QuantConfig.model_fields.items()})


class ObjectiveSpec(Strict):
    """An objective plugin by name, the calibration pair set it reads (if any), and its own settings.

    ``params`` is checked by the plugin's settings model (fair_pairs: FairPairParams, with α,
    roles, layers, ...), the same model the plugin checks its Python arguments with.
    """

    name: str = "fair_pairs"
    #: a pair set of calibration.pairs, or several combined into one objective (their pairs concatenated)
    pairs: str | list[str] | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("pairs")
    @classmethod
    def _some_pairs(cls, pairs: str | list[str] | None) -> str | list[str] | None:
        if isinstance(pairs, list) and (not pairs or len(set(pairs)) != len(pairs)):
            raise ValueError(f"a list of pair sets must name at least one, each once (got {pairs})")
        return pairs

    def pair_set_names(self) -> list[str]:
        """The calibration pair sets this objective reads (none, one, or several combined)."""
        return [] if self.pairs is None else [self.pairs] if isinstance(self.pairs, str) else list(self.pairs)

    def pair_set_label(self) -> str | None:
        """How the record names the objective's pairs: the set, or the combined sets joined by ``+``."""
        return "+".join(self.pair_set_names()) or None

    @field_validator("params")
    @classmethod
    def _settings(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _plugin_params("objectives", info.data.get("name"), params, defaults=True)


class BackendSpec(Strict):
    name: str = "cpu"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _settings(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _plugin_params("backends", info.data.get("name"), params)


def _default_gap_pairs() -> "PairSetSpec":
    return PairSetSpec(source="stereoset", params={"kind": "intrasentence"}, split="holdout", n=512, seed=0,
                       stratify=True)


class PairGapSpec(Strict):
    """The held-out pair-gap metric (fairgptq.evaluation.pair_gap): pairs never used for calibration.

    The pair set is fixed by its own seed: repeats over seeds vary the calibration, never
    the yardstick.  ``roles`` defaults to the roles the objectives target (else o_proj/down_proj).
    """

    pairs: PairSetSpec = Field(default_factory=_default_gap_pairs)
    roles: list[Role] | None = None
    alignment: Literal[ALIGNMENTS] = "aligned"  # type: ignore[valid-type]


def _check_option(tagged: tuple[str, Any]) -> Any:
    """One task option ``(key, value)``, validated by the task model that declares it (see EvaluationSpec)."""
    from ..evaluation.task_registry import describe_options
    from .messages import problems_from
    key, value = tagged
    specs = _task_option_specs()
    if key not in specs:
        raise ValueError(f"unknown key; allowed keys: {', '.join(EvaluationSpec.model_fields)}; task options: "
                         f"{describe_options(specs)}")
    try:
        return specs[key].validate(value)
    except ValidationError as e:
        raise ValueError(problems_from(e, BaseModel)[0][1]) from None


def _task_option_specs() -> dict:
    from ..evaluation.task_registry import option_specs, registered_tasks
    return option_specs(registered_tasks())


class EvaluationSpec(Strict):
    """Tasks for :func:`fairgptq.evaluation.evaluate`, the settings every task shares, and the tasks' options.

    A task's options (``max_tokens``, ``stereoset_split``, ``pair_split``, ...) are flat keys here,
    each validated by the options model of the registered task that declares it, where its one
    default lives; every registered option is filled in, so the saved config says what ran.
    """

    model_config = ConfigDict(extra="allow", validate_default=True)
    __pydantic_extra__: dict[str, Annotated[Any, AfterValidator(_check_option)]]

    tasks: list[str] = Field(default_factory=list)
    float_baseline: bool = False
    plain_baseline: bool = False  # also quantize with every α = 0 and evaluate (pipeline/plain_baseline.py)
    batch_size: PositiveInt = 16
    limit: PositiveInt | dict[str, PositiveInt] | None = None  # every likelihood task, or per task name
    paths: dict[str, str] = Field(default_factory=dict)
    pair_gap: PairGapSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _tag_options(cls, data: Any) -> Any:
        # pydantic validates extra keys one by one, putting the key in the error's path but not in the
        # validator's arguments; each value carries its key to _check_option
        if isinstance(data, dict):
            return {k: v if k in cls.model_fields else (k, v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _fill_option_defaults(self) -> "EvaluationSpec":
        given = self.__pydantic_extra__
        self.__pydantic_extra__ = {name: given[name] if name in given else spec.default
                                   for name, spec in _task_option_specs().items()}
        return self

    @model_serializer(mode="wrap")
    def _options_before_paths(self, handler: Any) -> dict:
        """Dump order: the shared settings, the task options, then paths and pair_gap (as pipelines write them)."""
        out = handler(self)
        head = [k for k in out if k in ("tasks", "float_baseline", "plain_baseline", "batch_size", "limit")]
        options = [k for k in self.options() if k in out]
        return {k: out[k] for k in [*head, *options, *(k for k in out if k not in head and k not in options)]}

    def options(self) -> dict[str, Any]:
        """The task options, every registered one, by name (what :func:`evaluate` takes as ``**options``)."""
        return dict(self.__pydantic_extra__ or {})


class ExportSpec(Strict):
    """The GPTQ checkpoint in ``<run>/model``: format, the unquantized tensors' dtype, the reload check.

    ``dtype``: float16 (GPTQModel's choice, half the size of float32), bfloat16, or ``model`` (the
    model's own).  The evaluated model is snapped to it, so it is exactly what is written.
    """

    enabled: bool = True
    checkpoint_format: Literal["auto", "gptq", "gptq_v2"] = "auto"
    dtype: Literal["float16", "bfloat16", "model"] = "float16"
    verify: bool = True

    def storage_dtype(self, model_dtype: str) -> str | None:
        """The dtype the unquantized tensors are stored (and the evaluated model snapped) in; None: no export."""
        if not self.enabled:
            return None
        return model_dtype if self.dtype == "model" else self.dtype


class SweepSpec(Strict):
    """Points to run: ``grid`` (key path -> values, every combination) times ``cases`` (explicit settings).

    Key paths are YAML paths such as ``objectives[0].params.alpha``.  ``cases`` covers settings that
    go together (the paper's "all layers α 0.1" and "lower layers α 0.5"), which a grid cannot.
    """

    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    cases: list[Annotated[dict[str, Any], Field(min_length=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> "SweepSpec":
        if not self.grid and not self.cases:
            raise ValueError("a sweep needs a grid or cases")
        return self

    def keys(self) -> list[str]:
        """Every swept key path, grid keys first."""
        return list(dict.fromkeys([*self.grid, *(k for case in self.cases for k in case)]))


class RepeatsSpec(Strict):
    """Run every point once per seed: the pipeline seed and every calibration sample's seed become it.

    One run is one draw of GPTQ's rounding noise; fairness claims are made across draws
    (mean, SD, t-interval, and the paired comparison with the same seed's plain GPTQ).
    """

    seeds: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> "RepeatsSpec":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct (got {self.seeds})")
        return self


class ExecutorSpec(Strict):
    """Where sweep points run: ``local`` (this process, the default) or ``ray`` (one task per point).

    ``address``: a Ray cluster's address (``auto``: the cluster this machine belongs to; unset: a
    local Ray started for the run); ``num_cpus`` / ``num_gpus``: resources each point's task asks for.
    """

    name: Literal["local", "ray"] = "local"
    address: str | None = None
    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)
    max_retries: int = Field(0, ge=0)
    runtime_env: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    seed: int = 0
    output: str | None = None
    plugins: list[str] = Field(default_factory=list)
    model: ModelSpec
    calibration: CalibrationSpec
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    objectives: list[ObjectiveSpec] = Field(default_factory=list)
    backend: BackendSpec = Field(default_factory=BackendSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    sweep: SweepSpec | None = None
    repeats: RepeatsSpec | None = None
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    @model_validator(mode="before")
    @classmethod
    def _register_plugins(cls, data: Any) -> Any:
        """The pipeline's plugin modules register first: the options of their evaluation tasks are keys here.

        A module that fails to import is reported by the checks (``plugins[i]``), not here.
        """
        plugins = data.get("plugins") if isinstance(data, dict) else None
        from ..registry import scoped_registry
        registry = scoped_registry()  # a pipeline's own; outside one nothing is registered (never the process's)
        if isinstance(plugins, list) and registry is not None:
            for module in plugins:
                try:
                    registry.register_module(module)
                except FairGPTQError:
                    pass
        return data
