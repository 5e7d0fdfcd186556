"""Which modules an objective touches: roles, layer strategies and α per role or layer (spec section 3)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..core.architectures import ROLES
from ..core.errors import ConfigError

STRATEGIES = ("all", "lower", "upper", "lower+upper")
DEFAULT_ROLES = ("attn_out", "mlp_out")


def default_k(n_layers: int) -> int:
    """The reference's subset size: ceil(0.1 L) rounded up to an even number."""
    k = math.ceil(0.1 * n_layers)
    return k + (k % 2)


def select_layers(strategy: str | Sequence[int], n_layers: int, k: float | int | None = None) -> list[int]:
    """Layer indices for a strategy; ``k`` is a count (>= 1) or a fraction of L (< 1)."""
    if not isinstance(strategy, str):
        idx = sorted(set(int(i) for i in strategy))
        bad = [i for i in idx if not -n_layers <= i < n_layers]
        if bad:
            raise ConfigError(f"layers {bad} out of range for a model with {n_layers} decoder layers")
        return sorted(set(i % n_layers for i in idx))
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown layer strategy {strategy!r}; use one of {STRATEGIES} or a list of indices")
    if strategy == "all":
        return list(range(n_layers))
    if k is None:
        count = default_k(n_layers)
    elif 0 < k < 1:
        count = max(1, math.ceil(k * n_layers))
    elif k >= 1 and float(k).is_integer():
        count = int(k)
    else:
        raise ConfigError(f"k={k!r} must be a fraction in (0, 1) or a whole count >= 1")
    count = min(count, n_layers)
    if strategy == "lower":
        return list(range(count))
    if strategy == "upper":
        return list(range(n_layers - count, n_layers))
    half = max(1, count // 2)
    return sorted(set(range(half)) | set(range(n_layers - half, n_layers)))


@dataclass(frozen=True)
class Targets:
    """Roles x layers an objective applies to, with α per role and per-layer overrides."""

    roles: tuple[str, ...] = DEFAULT_ROLES
    layers: str | tuple[int, ...] = "all"
    k: float | int | None = None
    alpha: float | Mapping[str, float] = 0.1
    layer_alpha: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown:
            raise ConfigError(f"unknown role(s) {unknown}; roles are {ROLES}")
        alphas = self.alpha.values() if isinstance(self.alpha, Mapping) else [self.alpha]
        if isinstance(self.alpha, Mapping):
            extra = [r for r in self.alpha if r not in self.roles]
            if extra:
                raise ConfigError(f"alpha given for role(s) {extra} that are not targeted ({self.roles})")
        for a in list(alphas) + list(self.layer_alpha.values()):
            if not (isinstance(a, (int, float)) and a >= 0 and math.isfinite(a)):
                raise ConfigError(f"alpha={a!r} must be a finite number >= 0")

    def alpha_for(self, layer: int, role: str, n_layers: int | None = None) -> float:
        """α of one module; ``layer_alpha`` keys may count from the end (-1: the last layer) like ``layers``.

        With ``n_layers`` given, a ``layer_alpha`` index outside the model is an error: it used to
        change nothing, silently.
        """
        if n_layers is not None:
            bad = [i for i in self.layer_alpha if not -n_layers <= i < n_layers]
            if bad:
                raise ConfigError(f"layer_alpha index(es) {bad} out of range for a model with {n_layers} decoder "
                                  f"layers (valid: -{n_layers} .. {n_layers - 1})")
            for key in (layer, layer - n_layers):
                if key in self.layer_alpha:
                    return float(self.layer_alpha[key])
        elif layer in self.layer_alpha:
            return float(self.layer_alpha[layer])
        return float(self.alpha[role]) if isinstance(self.alpha, Mapping) else float(self.alpha)

    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        return role in self.roles and layer in select_layers(self.layers, n_layers, self.k)

    def describe(self) -> dict:
        return {"roles": list(self.roles), "layers": self.layers if isinstance(self.layers, str) else list(self.layers),
                "k": self.k, "alpha": dict(self.alpha) if isinstance(self.alpha, Mapping) else self.alpha,
                "layer_alpha": {int(k): v for k, v in self.layer_alpha.items()}}
