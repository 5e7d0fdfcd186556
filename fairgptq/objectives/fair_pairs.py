"""The Fair-GPTQ group-fairness objective: α‖Ŵ(X⁰ − X¹)‖² over stereotype / anti-stereotype pairs.

H_bias = (2α/P) Σ_p D_p D_pᵀ with P the number of pairs (spec section 1): per pair, not
per token, so α keeps the paper's meaning.  By default the pair sentences also build H
(the reference calibrates on the same StereoSet sentences): H = (1/P) Σ_p (X⁰X⁰ᵀ + X¹X¹ᵀ).

On a routed expert of a mixture-of-experts model (``mlp_in`` / ``mlp_out``, core/experts.py) the
captured input is the block's dense-shaped input, zero on the tokens routed elsewhere, so the same
D = X⁰_e − X¹_e at aligned positions is the expert's share of the pair's difference (a token routed
to it in one sentence only contributes its full input).  It is the *ungated* input (the routing
weight multiplies the down projection's output), as H's is.  An expert no pair token reaches gets an
all-zero term, which the driver drops and records (docs/architectures.md, "Objectives on routed experts").
"""
from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import torch

from ..contract import Alpha, Captured, ConfigError, Pair, PairObjective, TargetParams, TargetedObjective, validated, pairs_hash
from .pair_activations import ALIGNMENTS, PairStreams, pair_differences, tokenize_pairs


class FairPairParams(TargetParams):
    """fair_pairs' settings: the targeted modules and α (TargetParams), plus how pairs are used.

    ``alignment`` chooses which token positions of a pair are differenced (pair_activations);
    ``calibrate_with_pairs`` lets the pair sentences build H too (the paper's recipe).
    """

    alignment: Literal[ALIGNMENTS] = "aligned"  # type: ignore[valid-type]
    calibrate_with_pairs: bool = True

    def builds_hessian(self) -> bool:
        return self.calibrate_with_pairs


class FairPairObjective(PairObjective):
    """Fair-GPTQ's pair term for the targeted (layer, role) modules.

    ``pairs``, ``pair_set`` (the set's name), ``batch_size`` and ``max_length`` come from the
    run; every other keyword is a setting of :class:`FairPairParams`, checked there.
    """

    name = "fair_pairs"
    Params = FairPairParams

    def _start(self) -> None:
        self.settings = self.params.settings()
        self._streams: PairStreams | None = None

    @property
    def _names(self) -> tuple[str, str]:
        # named by pair set, so that two pair objectives on two sets (English and French) propagate both
        return f"pairs[{self.pair_set}]:stereo", f"pairs[{self.pair_set}]:anti"

    def streams(self, tokenizer) -> dict:
        if self.params.is_off() and not self.params.builds_hessian():
            return {}  # no term and no H from the pairs: propagating them would change nothing but the time
        if tokenizer is None:
            raise ConfigError("the pair objective needs the model's tokenizer (pass tokenizer= to quantize_model)")
        self._streams = tokenize_pairs(self.pairs, tokenizer, alignment=self.params.alignment,
                                       batch_size=self.batch_size, max_length=self.max_length)
        s, a = self._names
        return {s: self._streams.stereo, a: self._streams.anti}

    def term(self, layer: int, role: str, inputs: dict[str, list[Captured]]) -> torch.Tensor | None:
        if self._streams is None:
            # without it the driver propagated no pair streams: the run would silently be plain GPTQ
            raise ConfigError(f"layer {layer} {role}: the pair objective's term was asked for before its "
                              f"streams(tokenizer) were built; run it through quantize_model (or call "
                              f"streams() and propagate its batches first)")
        alpha = self.strength(layer, role)
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
                "pairs_sha256_16": pairs_hash(self.pairs), **self.params.describe()}


class MatrixParams(TargetParams):
    """hbias_matrix's settings: TargetParams with α = 1, since the callable's matrix carries its own scale."""

    alpha: Alpha = 1.0


class MatrixObjective(TargetedObjective):
    """An extra H_bias source: any callable (layer, role, dim) -> PSD matrix or None, scaled by α.

    The way to add a bias term that is not built from pairs (e.g. a projector onto a
    direction found elsewhere) without touching the core.
    """

    name = "hbias_matrix"
    Params = MatrixParams

    def __init__(self, fn: Callable[[int, str, int], Any], **settings: Any) -> None:
        self.fn = fn
        self.params = validated(MatrixParams, settings, "objective hbias_matrix")
        self.settings = self.params.settings()

    def term(self, layer: int, role: str, inputs: dict[str, list[Captured]]) -> torch.Tensor | None:
        dim = next(iter(inputs.values()))[0].x.shape[-1]
        M = self.fn(layer, role, dim)
        if M is None:
            return None
        M = torch.as_tensor(M, dtype=torch.float32)
        if M.shape != (dim, dim) or not torch.allclose(M, M.T, atol=1e-5 * float(M.abs().max().clamp_min(1))):
            raise ConfigError(f"extra H_bias for layer {layer} {role}: expected a symmetric {dim}x{dim} matrix, "
                              f"got shape {tuple(M.shape)}")
        return M * self.strength(layer, role)

    def describe(self) -> dict:
        return {"name": self.name, "fn": getattr(self.fn, "__qualname__", repr(self.fn)), **self.params.describe()}
