"""The Fair-GPTQ group-fairness objective: α‖Ŵ(X⁰ − X¹)‖² over stereotype / anti-stereotype pairs.

H_bias = (2α/P) Σ_p D_p D_pᵀ with P the number of pairs (spec section 1): per pair, not
per token, so α keeps the paper's meaning.  By default the pair sentences also build H
(the reference calibrates on the same StereoSet sentences): H = (1/P) Σ_p (X⁰X⁰ᵀ + X¹X¹ᵀ).
"""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import torch

from ..core.errors import ConfigError
from ..core.gptq import FAIR_MODES
from ..core.objective import Captured, FairSettings, Objective
from ..datasets_adapters.pairs import Pair
from .pair_activations import ALIGNMENTS, PairStreams, pair_differences, tokenize_pairs
from .targets import DEFAULT_ROLES, Targets


def pairs_hash(pairs: Sequence[Pair]) -> str:
    """Content hash of a pair set (order-sensitive), recorded with every quantized checkpoint."""
    h = hashlib.sha256()
    for p in pairs:
        h.update("\x1f".join((p.stereo, p.anti, p.category, p.language, p.source_id)).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]


class FairPairObjective(Objective):
    """Fair-GPTQ's pair term for the targeted (layer, role) modules."""

    name = "fair_pairs"

    def __init__(
        self, pairs: Sequence[Pair], alpha: float | Mapping[str, float] = 0.1,
        roles: Sequence[str] = DEFAULT_ROLES, layers: str | Sequence[int] = "all", k: float | int | None = None,
        layer_alpha: Mapping[int, float] | None = None, mode: str = "first_order", on_overshoot: str = "warn",
        alignment: str = "aligned", calibrate_with_pairs: bool = True, batch_size: int = 32,
        max_length: int = 128, pair_set: str = "custom",
    ) -> None:
        if not pairs:
            raise ConfigError("the pair objective needs at least one pair")
        if mode not in FAIR_MODES:
            raise ConfigError(f"mode={mode!r}: use one of {FAIR_MODES}")
        if alignment not in ALIGNMENTS:
            raise ConfigError(f"alignment={alignment!r}: use one of {ALIGNMENTS}")
        self.pairs = list(pairs)
        self.targets = Targets(tuple(roles), layers if isinstance(layers, str) else tuple(layers), k, alpha,
                               dict(layer_alpha or {}))
        self.settings = FairSettings(mode=mode, on_overshoot=on_overshoot)
        self.alignment, self.calibrate_with_pairs = alignment, calibrate_with_pairs
        self.batch_size, self.max_length = batch_size, max_length
        self.pair_set = pair_set
        self._streams: PairStreams | None = None
        self._alphas: dict[tuple[int, str], float] = {}

    @property
    def _names(self) -> tuple[str, str]:
        # named by pair set, so that two pair objectives on two sets (English and French) propagate both
        return f"pairs[{self.pair_set}]:stereo", f"pairs[{self.pair_set}]:anti"

    def streams(self, tokenizer) -> dict:
        if tokenizer is None:
            raise ConfigError("the pair objective needs the model's tokenizer (pass tokenizer= to quantize_model)")
        self._streams = tokenize_pairs(self.pairs, tokenizer, alignment=self.alignment,
                                       batch_size=self.batch_size, max_length=self.max_length)
        s, a = self._names
        return {s: self._streams.stereo, a: self._streams.anti}

    def hessian_streams(self) -> set[str]:
        return set(self._names) if self.calibrate_with_pairs else set()

    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        # term() has no n_layers, which negative layer_alpha keys need: it uses the α decided here
        self._alphas[layer, role] = self.targets.alpha_for(layer, role, n_layers)
        return self.targets.applies(layer, role, n_layers) and self._alphas[layer, role] > 0

    def term(self, layer: int, role: str, inputs: dict[str, list[Captured]]) -> torch.Tensor | None:
        if self._streams is None:
            # without it the driver propagated no pair streams: the run would silently be plain GPTQ
            raise ConfigError(f"layer {layer} {role}: the pair objective's term was asked for before its "
                              f"streams(tokenizer) were built; run it through quantize_model (or call "
                              f"streams() and propagate its batches first)")
        alpha = self._alphas.get((layer, role), self.targets.alpha_for(layer, role))
        if alpha == 0:
            return None
        s, a = self._names
        acc = None
        for c0, c1, plan in zip(inputs[s], inputs[a], self._streams.plans):
            D = pair_differences(c0, c1, plan)
            acc = D.T @ D if acc is None else acc.addmm_(D.T, D)
        scaled = acc * (2.0 * alpha / len(self.pairs))
        if bool(torch.isfinite(acc).all()) and not bool(torch.isfinite(scaled).all()):
            raise ConfigError(f"layer {layer} {role}: α={alpha:g} makes H_bias overflow float32 (the pair "
                              f"differences alone are finite); use a far smaller α (the paper's are 0.1-0.5)")
        return scaled

    def describe(self) -> dict:
        return {"name": self.name, "pair_set": self.pair_set, "pairs": len(self.pairs),
                "pairs_sha256_16": pairs_hash(self.pairs), "mode": self.settings.mode,
                "on_overshoot": self.settings.on_overshoot, "alignment": self.alignment,
                "calibrate_with_pairs": self.calibrate_with_pairs, **self.targets.describe()}


class MatrixObjective(Objective):
    """An extra H_bias source: any callable (layer, role, dim) -> PSD matrix or None, scaled by α.

    The way to add a bias term that is not built from pairs (e.g. a projector onto a
    direction found elsewhere) without touching the core.
    """

    name = "hbias_matrix"

    def __init__(self, fn, alpha: float = 1.0, roles: Sequence[str] = DEFAULT_ROLES,
                 layers: str | Sequence[int] = "all", mode: str = "first_order", on_overshoot: str = "warn") -> None:
        self.fn = fn
        self.targets = Targets(tuple(roles), layers if isinstance(layers, str) else tuple(layers), None, alpha)
        self.settings = FairSettings(mode=mode, on_overshoot=on_overshoot)

    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        return self.targets.applies(layer, role, n_layers)

    def term(self, layer: int, role: str, inputs: dict[str, list[Captured]]) -> torch.Tensor | None:
        dim = next(iter(inputs.values()))[0].x.shape[-1]
        M = self.fn(layer, role, dim)
        if M is None:
            return None
        M = torch.as_tensor(M, dtype=torch.float32)
        if M.shape != (dim, dim) or not torch.allclose(M, M.T, atol=1e-5 * float(M.abs().max().clamp_min(1))):
            raise ConfigError(f"extra H_bias for layer {layer} {role}: expected a symmetric {dim}x{dim} matrix, "
                              f"got shape {tuple(M.shape)}")
        return M * self.targets.alpha_for(layer, role)

    def describe(self) -> dict:
        return {"name": self.name, "fn": getattr(self.fn, "__qualname__", repr(self.fn)),
                "mode": self.settings.mode, **self.targets.describe()}
