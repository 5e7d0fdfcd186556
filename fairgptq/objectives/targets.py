"""Which modules an objective touches, and with what α (spec section 3): the settings model objectives share.

:class:`TargetParams` is the one place these settings are checked: the pipeline schema
validates ``objectives[i].params`` with an objective's ``Params`` model (a subclass), and the
objective validates its Python keyword arguments with the same model.  Checks that need the
model's depth (an index past the last layer) cannot run before the model is known; they live
in :meth:`TargetParams.depth_problems`, which the pipeline's preflight and the run both call.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..core.architectures import ROLES
from ..core.errors import ConfigError
from ..core.gptq import FAIR_MODES

DEFAULT_ROLES = ("attn_out", "mlp_out")
Role = Literal[ROLES]  # type: ignore[valid-type]


def default_subset_size(n_layers: int) -> int:
    """The reference's subset size: ceil(0.1 L) rounded up to an even number."""
    k = math.ceil(0.1 * n_layers)
    return k + (k % 2)


def _half(count: int, n: int) -> list[int]:
    half = max(1, count // 2)
    return sorted(set(range(half)) | set(range(n - half, n)))


_STRATEGIES: dict[str, Callable[[int, int], list[int]]] = {
    "all": lambda count, n: list(range(n)),
    "lower": lambda count, n: list(range(count)),
    "upper": lambda count, n: list(range(n - count, n)),
    "lower+upper": _half,
}
STRATEGIES = tuple(_STRATEGIES)


def select_layers(strategy: str | list[int] | tuple[int, ...], n_layers: int,
                  subset_size: float | int | None = None) -> list[int]:
    """Layer indices for a strategy or an explicit index list (negative counts from the end).

    ``subset_size`` is the lower/upper subset: a count (>= 1) or a fraction of L (< 1);
    None is the reference's :func:`default_subset_size`.
    """
    if not isinstance(strategy, str):
        idx = sorted(set(int(i) for i in strategy))
        bad = [i for i in idx if not -n_layers <= i < n_layers]
        if bad:
            raise ConfigError(f"layers {bad} out of range for a model with {n_layers} decoder layers")
        return sorted(set(i % n_layers for i in idx))
    if strategy not in _STRATEGIES:
        raise ConfigError(f"unknown layer strategy {strategy!r}; use one of {STRATEGIES} or a list of indices")
    if subset_size is None:
        count = default_subset_size(n_layers)
    elif subset_size < 1:
        count = max(1, math.ceil(subset_size * n_layers))
    else:
        count = int(subset_size)
    return _STRATEGIES[strategy](min(count, n_layers), n_layers)


def _nonneg_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number >= 0 (got {v!r})")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"must be >= 0 (got {v!r})")
    return float(v)


def _check_alpha(v: Any) -> float | dict[str, float]:
    if isinstance(v, dict):
        unknown = [r for r in v if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown role(s) {unknown} in the α mapping; roles are {list(ROLES)}")
        return {r: _nonneg_number(a) for r, a in v.items()}
    return _nonneg_number(v)


def _check_layers(v: Any) -> str | list[int]:
    if isinstance(v, str):
        if v not in STRATEGIES:
            raise ValueError(f"must be one of {list(STRATEGIES)} or a list of layer indices (got {v!r})")
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return list(v)
    raise ValueError(f"must be one of {list(STRATEGIES)} or a non-empty list of layer indices (got {v!r})")


def _check_subset_size(v: float | None) -> float | int | None:
    if v is None:
        return None
    if 0 < v < 1:
        return float(v)
    if v >= 1 and float(v).is_integer():
        return int(v)
    raise ValueError(f"must be a fraction of the layers in (0, 1) or a whole count >= 1 (got {v})")


def _check_layer_alpha(v: dict[int, float] | None) -> dict[int, float] | None:
    return None if v is None else {int(k): _nonneg_number(a) for k, a in v.items()}


Alpha = Annotated[Any, AfterValidator(_check_alpha)]  # a number >= 0, or a mapping role -> number


class TargetParams(BaseModel):
    """Roles x layers an objective applies to, α per role and per-layer overrides, and the solve settings.

    ``layers`` is a strategy (all, lower, upper, lower+upper: the paper's subsets) or a list of
    indices; ``subset_size`` sizes the lower/upper subsets (a count, or a fraction of L).
    ``mode`` and ``on_overshoot`` choose how the debiasing update is solved (core.gptq).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    alpha: Alpha = 0.1
    roles: list[Role] = Field(default_factory=lambda: list(DEFAULT_ROLES), min_length=1)
    layers: Annotated[Any, AfterValidator(_check_layers)] = "all"
    subset_size: Annotated[float | None, AfterValidator(_check_subset_size)] = None
    layer_alpha: Annotated[dict[int, Any] | None, AfterValidator(_check_layer_alpha)] = None
    mode: Literal[FAIR_MODES] = "first_order"  # type: ignore[valid-type]
    on_overshoot: Literal["warn", "exact", "error"] = "warn"

    @model_validator(mode="after")
    def _alpha_roles_are_targeted(self) -> "TargetParams":
        if isinstance(self.alpha, dict):
            extra = [r for r in self.alpha if r not in self.roles]
            if extra:
                raise ValueError(f"alpha given for role(s) {extra} that are not targeted ({self.roles})")
        return self

    def depth_problems(self, n_layers: int, *, idle: bool = True) -> list[tuple[str, str]]:
        """(setting, message) for indices a model of ``n_layers`` layers does not have.

        ``idle`` also reports ``layer_alpha`` entries for layers the objective does not target,
        whose α would change nothing (the pipeline's preflight asks for it; the run does not).
        """
        valid = f"out of range for a model with {n_layers} decoder layers (valid: -{n_layers} .. {n_layers - 1})"
        if isinstance(self.layers, list):
            bad = [x for x in self.layers if not -n_layers <= x < n_layers]
            if bad:
                return [("layers", f"index(es) {bad} {valid}")]
        if not self.layer_alpha:
            return []
        bad = [x for x in self.layer_alpha if not -n_layers <= x < n_layers]
        if bad:
            return [("layer_alpha", f"index(es) {bad} {valid}")]
        targeted = set(select_layers(self.layers, n_layers, self.subset_size))
        lazy = [x for x in self.layer_alpha if x % n_layers not in targeted]
        if idle and lazy:
            return [("layer_alpha", f"layer(s) {lazy} are not among the targeted layers {sorted(targeted)} "
                                    f"(layers: {self.layers!r}), so their α would change nothing")]
        return []

    def alpha_for(self, layer: int, role: str, n_layers: int | None = None) -> float:
        """α of one module; ``layer_alpha`` keys may count from the end (-1: the last layer) like ``layers``.

        With ``n_layers`` given, a ``layer_alpha`` index outside the model is an error: it used to
        change nothing, silently.
        """
        layer_alpha = self.layer_alpha or {}
        if n_layers is not None:
            problems = self.depth_problems(n_layers, idle=False)
            if problems:
                raise ConfigError(f"{problems[0][0]}: {problems[0][1]}")
            for key in (layer, layer - n_layers):
                if key in layer_alpha:
                    return float(layer_alpha[key])
        elif layer in layer_alpha:
            return float(layer_alpha[layer])
        return float(self.alpha[role]) if isinstance(self.alpha, dict) else float(self.alpha)

    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        return role in self.roles and layer in select_layers(self.layers, n_layers, self.subset_size)

    def describe(self) -> dict:
        return self.model_dump()
