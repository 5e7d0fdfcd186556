"""Which modules an objective touches, and with what α (spec section 3): the settings models objectives share.

:class:`TargetSelection` (roles, layers) and :class:`TargetParams` (plus α and the quadratic
term's solve) are the one place these settings are checked: the pipeline schema validates
``objectives[i].params`` with an objective's ``Params`` model (a subclass), and the objective
validates its Python keyword arguments with the same model.  Checks that need the model's depth
(an index past the last layer) cannot run before the model is known; they live in
``depth_problems``, which the pipeline's preflight and the run both call.
:class:`TargetedObjective` is the base the built-in objectives (and the examples) share.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal, Sequence

from pydantic import AfterValidator, Field, model_validator

from ..core.architectures import ROLES
from ..core.errors import ConfigError
from ..core.gptq import FAIR_MODES
from ..core.objective import FairSettings, Objective, ObjectiveParams
from .pairs import Pair
from .params import validated

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


class Targeting(ObjectiveParams):
    """What roles x layers settings answer: which modules a term applies to, checked against the depth.

    Holds no fields, so each settings model declares its own in the order its users read them:
    :class:`TargetSelection` (roles, layers, subset_size) and :class:`TargetParams` (α first).
    ``layers`` is a strategy (all, lower, upper, lower+upper: the paper's subsets) or a list of
    indices; ``subset_size`` sizes the lower/upper subsets (a count, or a fraction of L).
    """

    def depth_problems(self, n_layers: int, *, idle: bool = True) -> list[tuple[str, str]]:
        """(setting, message) for indices a model of ``n_layers`` layers does not have."""
        if isinstance(self.layers, list):
            bad = [x for x in self.layers if not -n_layers <= x < n_layers]
            if bad:
                return [("layers", f"index(es) {bad} {_out_of_range(n_layers)}")]
        return []

    def strength_for(self, layer: int, role: str, n_layers: int) -> float:
        """How strongly the term applies to one targeted module (1 here; α where the settings have one)."""
        return 0.0 if self.is_off() else 1.0

    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        return role in self.roles and layer in select_layers(self.layers, n_layers, self.subset_size)

    def targeted_roles(self) -> list[str]:
        return list(self.roles)

    def describe(self) -> dict:
        return self.dump()


_ROLES_FIELD = Field(default_factory=lambda: list(DEFAULT_ROLES), min_length=1)
Layers = Annotated[Any, AfterValidator(_check_layers)]
SubsetSize = Annotated[float | None, AfterValidator(_check_subset_size)]


class TargetSelection(Targeting):
    """Roles x layers an objective applies to, without an α (an objective with a strength of its own)."""

    roles: list[Role] = _ROLES_FIELD
    layers: Layers = "all"
    subset_size: SubsetSize = None


def _out_of_range(n_layers: int) -> str:
    return f"out of range for a model with {n_layers} decoder layers (valid: -{n_layers} .. {n_layers - 1})"


class TargetParams(Targeting):
    """Targeting plus α per role, per-layer overrides and the quadratic term's solve settings.

    ``mode`` and ``on_overshoot`` choose how the debiasing update is solved (core.gptq).  The term is
    off when every α is 0; its plain twin sets α 0 and drops the per-layer α.
    """

    alpha: Alpha = 0.1
    roles: list[Role] = _ROLES_FIELD
    layers: Layers = "all"
    subset_size: SubsetSize = None
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

    def is_off(self) -> bool:
        alphas = self.alpha.values() if isinstance(self.alpha, dict) else [self.alpha]
        return all(a == 0 for a in alphas) and not any((self.layer_alpha or {}).values())

    def without_term(self) -> "TargetParams":
        return self.model_copy(update={"alpha": 0.0, "layer_alpha": None})

    def settings(self) -> FairSettings:
        """How the quadratic term is solved, as the driver takes it."""
        return FairSettings(mode=self.mode, on_overshoot=self.on_overshoot)

    def depth_problems(self, n_layers: int, *, idle: bool = True) -> list[tuple[str, str]]:
        """(setting, message) for indices a model of ``n_layers`` layers does not have.

        ``idle`` also reports ``layer_alpha`` entries for layers the objective does not target,
        whose α would change nothing (the pipeline's preflight asks for it; the run does not).
        """
        problems = super().depth_problems(n_layers, idle=idle)
        if problems or not self.layer_alpha:
            return problems
        bad = [x for x in self.layer_alpha if not -n_layers <= x < n_layers]
        if bad:
            return [("layer_alpha", f"index(es) {bad} {_out_of_range(n_layers)}")]
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

    def strength_for(self, layer: int, role: str, n_layers: int) -> float:
        return self.alpha_for(layer, role, n_layers) if self.applies(layer, role, n_layers) else 0.0


class TargetedObjective(Objective):
    """An objective whose settings are :class:`Targeting`: which modules, and how strongly, resolved once.

    ``applies`` (the driver asks it first, with the model's depth) records each module's strength
    (α for :class:`TargetParams`), so :meth:`strength` in ``term``/``linear`` needs no depth.
    """

    params: Targeting

    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        if not self.params.applies(layer, role, n_layers):
            return False
        strengths = self.__dict__.setdefault("_strengths", {})
        strengths[layer, role] = self.params.strength_for(layer, role, n_layers)
        return strengths[layer, role] > 0

    def strength(self, layer: int, role: str) -> float:
        """The strength ``applies`` resolved for (layer, role); without that call, the one the settings give."""
        known = self.__dict__.get("_strengths", {})
        if (layer, role) in known:
            return known[layer, role]
        alpha_for = getattr(self.params, "alpha_for", None)
        return alpha_for(layer, role) if alpha_for is not None else 1.0


class PairObjective(TargetedObjective):
    """A targeted objective calibrated on pairs: the run hands it the pairs, their set's name and the batch shape.

    ``pairs``, ``pair_set``, ``batch_size`` and ``max_length`` come from the run (the pipeline passes
    them to a factory whose signature names them); every other keyword is a setting of ``Params``.
    """

    Params: type[ObjectiveParams]

    def __init__(self, pairs: Sequence[Pair], *, pair_set: str = "custom", batch_size: int = 32,
                 max_length: int = 128, **settings: Any) -> None:
        if not pairs:
            raise ConfigError(f"objective {self.name} needs at least one pair")
        self.pairs = list(pairs)
        self.params = validated(self.Params, settings, f"objective {self.name}")
        self.pair_set, self.batch_size, self.max_length = pair_set, batch_size, max_length
        self._start()

    def _start(self) -> None:
        """The subclass's own state, set up once its settings are validated."""
