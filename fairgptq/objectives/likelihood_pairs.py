"""Likelihood-directed Fair-GPTQ: a linear term that lowers the pairs' log-likelihood preference itself.

The paper's term shrinks activation differences between paired sentences, which are not what a
bias score reads.  A score reads the likelihood preference

    B = (1/P) Σ_p [ℓ(stereo_p) − ℓ(anti_p)]

(ℓ: the sentence's summed token log-probability after the prefix token, as lm-eval scores
CrowS-Pairs; or only the differing span's tokens).  Optimal Brain Surgeon's expansion drops the
gradient term because trained weights sit at a minimum of the training loss; they do not sit at
a minimum of B.  Keeping it gives each targeted module the layer objective

    ½ tr((W' − W) H (W' − W)ᵀ) + λ ⟨G, W' − W⟩,   G = ∂B/∂W,

whose minimiser W* = W − λ G (H + λ_d I)^-1 (the factor GPTQ already has) changes B by
−λ tr(G H^-1 Gᵀ) to first order; GPTQ then rounds W* under H.

``target`` gives λ in the score's own units: the fraction of the calibration pairs' B₀ to remove
(B → (1 − target) B₀ to first order, never past parity), split across modules in proportion to
tr(G H^-1 Gᵀ): with one λ for every module, the split that moves the weights least in GPTQ's
metric.  The split needs every module's trace before the first module is solved, but a module's
own H is only known when its layer is reached, so the shares are estimated on the float model
from the first calibration batch, and each module's λ is then sized with its own H so that it
removes exactly its share to first order (one batch of 4096 tokens overestimates the traces of
1536-wide inputs by about 1.6x, but nearly uniformly, so the shares hold while a common λ from
them would fall short).  ``lambda`` fixes λ instead.

``metric: identity`` takes the plain gradient step −λG instead (the direction the float-model probe
of docs/gradient_step_probe used), expressed as the linear term λ G (H + λ_d I) whose minimiser
it is; its split needs no Hessian: λ = target · B₀ / Σ ‖G‖².

Tokens of the common prefix are left out of B: a causal model gives both sentences the same
probabilities there, so they cancel exactly in B and in G.

The objective is written against the public contract only (core/objective.py), as an outside
plugin would be.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Literal, Sequence

import torch
from pydantic import Field, model_validator

from ..contract import ConfigError, FactoredHessian, LinearTerm, Pair, PairObjective, ScoreGradient, ScoreRequest, TargetSelection, TokenBatch, apply_damped, apply_inverse, common_prefix_length, encode_request, pad_id, right_padded, pairs_hash


logger = logging.getLogger("fairgptq.objectives")
SCORES = ("sentence", "span")
#: calibration batches whose float-model H estimates the split of a ``target`` over modules
SPLIT_BATCHES = 1
#: a given λ whose first-order step moves B by more than this many times B₀ is refused (``_check_size``)
MAX_OVERSHOOT = 100.0


class LikelihoodPairParams(TargetSelection):
    """likelihood_pairs' settings: targeting, the strength (``target`` or ``lambda``), the score and the gradient.

    - ``target``: fraction in [0, 1] of the calibration pairs' preference B₀ to remove (first order).
    - ``lambda``: λ itself (≥ 0), instead of ``target``.
    - ``score``: ``sentence`` (every token after the common prefix: the CrowS-Pairs convention) or
      ``span`` (only the differing span's own tokens).
    - ``gradient``: ``float`` (G once, on the float model) or ``sequential`` (G recomputed on the
      partially quantized model, so later layers see earlier layers' rounding: one forward and
      backward pass every ``refresh`` layers, for those layers' modules).
    - ``when``: ``during`` quantization (the linear term of each module's GPTQ problem) or
      ``before`` it: the same step, with the float model's H, applied to the float model, which
      plain GPTQ then quantizes ("debias, then quantize").
    - ``metric``: ``hessian`` (the step −λ G (H + λ_d I)^-1: least change of the calibration outputs
      for the preference removed, the issue's layer objective) or ``identity`` (the plain gradient
      step −λ G, written as the linear term λ G (H + λ_d I) whose minimiser it is).
    """

    target: float | None = Field(0.5, ge=0, le=1)
    lambda_: float | None = Field(None, ge=0, alias="lambda")
    score: Literal[SCORES] = "sentence"  # type: ignore[valid-type]
    gradient: Literal["float", "sequential"] = "float"
    refresh: int = Field(1, ge=1)
    when: Literal["during", "before"] = "during"
    metric: Literal["hessian", "identity"] = "hessian"

    model_config = {**TargetSelection.model_config, "populate_by_name": True, "serialize_by_alias": True}

    @model_validator(mode="before")
    @classmethod
    def _one_strength(cls, data: Any) -> Any:
        if isinstance(data, dict):
            has_lambda = data.get("lambda", data.get("lambda_")) is not None
            if has_lambda and data.get("target") is not None:
                raise ValueError("give target (a fraction of the calibration preference) or lambda, not both")
            if has_lambda and "target" not in data:
                data = {**data, "target": None}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "LikelihoodPairParams":
        if self.target is None and self.lambda_ is None:
            raise ValueError("give target (a fraction of the calibration preference, 0..1) or lambda")
        if self.when == "before" and self.gradient == "sequential":
            raise ValueError("when: before takes one step on the float model; a sequential gradient needs the "
                             "partially quantized model (use when: during)")
        return self

    def is_off(self) -> bool:
        return (self.target if self.target is not None else self.lambda_) == 0

    def without_term(self) -> "LikelihoodPairParams":
        return self.model_copy(update={"target": 0.0, "lambda_": None})

    def needs_gradients(self) -> bool:
        return not self.is_off()


def score_batches(pairs: Sequence[Pair], tokenizer, *, score: str = "sentence", batch_size: int = 32,
                  max_length: int = 128) -> tuple[list[TokenBatch], list[torch.Tensor], int]:
    """The pairs as right-padded batches with per-token weights +1/P (stereo) and −1/P (anti): B = Σ w log p.

    Each sentence is tokenised as the CrowS-Pairs evaluation tokenises it (``encode_request``: the
    prefix token, then the sentence), cut to ``max_length`` tokens.  Sequences are sorted by length so
    batches carry little padding.  Returns the batches, their weights and the number of pairs that
    read as identical within ``max_length`` tokens (they add nothing).
    """
    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}; use one of {SCORES}")
    rows: list[tuple[list[int], list[float]]] = []
    P, blind = len(pairs), 0
    for p in pairs:
        a, b = (_tokens(tokenizer, text, max_length) for text in (p.stereo, p.anti))
        if a == b:
            blind += 1
            continue
        lo = common_prefix_length(a, b)
        suffix = min(common_prefix_length(a[::-1], b[::-1]), len(a) - lo, len(b) - lo)
        for ids, sign in ((a, 1.0 / P), (b, -1.0 / P)):
            hi = len(ids) - suffix if score == "span" else len(ids)
            rows.append((ids, [sign if lo <= t < hi else 0.0 for t in range(len(ids))]))
    rows.sort(key=lambda r: len(r[0]), reverse=True)
    batches, weights = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = right_padded([ids for ids, _ in chunk], pad_id(tokenizer))
        w = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        for r, (_, wt) in enumerate(chunk):
            w[r, :len(wt)] = torch.tensor(wt)
        batches.append(batch)
        weights.append(w)
    return batches, weights, blind


def _tokens(tokenizer, text: str, max_length: int) -> list[int]:
    r = encode_request(tokenizer, "", text)
    return list(r.context + r.continuation)[:max_length]


class LikelihoodPairObjective(PairObjective):
    """λ⟨∂B/∂W, W' − W⟩ on the targeted modules, B the pairs' mean log-likelihood preference.

    ``pairs``, ``pair_set``, ``batch_size`` and ``max_length`` come from the run; every other
    keyword is a setting of :class:`LikelihoodPairParams`.
    """

    name = "likelihood_pairs"
    Params = LikelihoodPairParams

    def _start(self) -> None:
        self._grads: dict[str, torch.Tensor] = {}
        self._lambda: float | None = self.params.lambda_
        self._before: dict[str, torch.Tensor] | None = None
        self._traces: dict[str, float] = {}  # tr(G H^-1 Gᵀ) per module on the float model's H
        self._measured: dict[str, Any] = {}

    def score_request(self, tokenizer) -> ScoreRequest | None:
        if not self.params.needs_gradients():
            return None
        if tokenizer is None:
            raise ConfigError("likelihood_pairs needs the model's tokenizer (pass tokenizer= to quantize_model)")
        batches, weights, blind = score_batches(self.pairs, tokenizer, score=self.params.score,
                                                batch_size=self.batch_size, max_length=self.max_length)
        if blind == len(self.pairs):
            raise ConfigError(f"all {len(self.pairs)} pairs read as identical within {self.max_length} tokens, so "
                              f"their preference is 0 and there is nothing to remove; raise calibration.max_length")
        if blind:
            logger.warning("%d of %d pairs read as identical within %d tokens and add nothing to B",
                           blind, len(self.pairs), self.max_length)
        before = self.params.when == "before"
        needs_h = self.params.metric == "hessian" and (before or self._lambda is None)
        return ScoreRequest(batches, weights, sequential=self.params.gradient == "sequential",
                            refresh=self.params.refresh,
                            float_hessian_batches=(None if before else SPLIT_BATCHES) if needs_h else 0)

    def receive_gradient(self, gradient: ScoreGradient, float_hessians: dict[str, FactoredHessian] | None) -> None:
        self._grads.update(gradient.grads)
        if gradient.layer is not None:  # a sequential refresh: B on the partially quantized model
            self._measured.setdefault("preference_by_layer", {})[gradient.layer] = gradient.value
            return
        self._measured["calibration_preference"] = gradient.value
        if self._lambda is None:  # only a target is split by the traces; a given λ asked for no float Hessians
            self._traces = {name: float((G * self._direction(G, (float_hessians or {}).get(name))).sum())
                            for name, G in gradient.grads.items()}
        if self.params.when == "before":
            lam = self._lambda if self._lambda is not None else self._target_lambda(gradient.value)
            self._before = {name: -lam * self._direction(G, (float_hessians or {}).get(name))
                            for name, G in gradient.grads.items()}
            self._measured["lambda"] = lam
            self._measured["predicted_change"] = float(sum((G * self._before[n]).sum()
                                                           for n, G in gradient.grads.items()))
            self._check_size("the float model", lam, -self._measured["predicted_change"])

    def _check_size(self, where: str, lam: float, change: float) -> None:
        """Refuse a given λ whose first-order step overshoots B₀ by orders of magnitude, naming what it does.

        A λ far too large used to surface layers later as whatever broke first ("half precision",
        "the Hessian is all zero"), never as the λ.  ``change`` is λ tr(G M Gᵀ), the first-order
        fall of B this step alone predicts (M the metric).
        """
        B0 = self._measured["calibration_preference"]
        if math.isfinite(change) and (B0 == 0 or abs(change) <= MAX_OVERSHOOT * abs(B0)):
            return
        size = f"{change:.3g}" if math.isfinite(change) else "more than float32 holds"
        fit = f"; about lambda {lam * abs(B0) / abs(change):.3g} removes B₀ there" if math.isfinite(change) and change else ""
        raise ConfigError(f"likelihood_pairs: lambda {lam:g} steps {where} by {size} in the calibration pairs' "
                          f"preference (first order), against B₀ = {B0:.3g}: more than {MAX_OVERSHOOT:g} times past "
                          f"parity, where the step no longer means what it predicts{fit}. Lower lambda, or give "
                          f"target (0..1, a fraction of B₀) instead")

    def _direction(self, G: torch.Tensor, factored: FactoredHessian | None) -> torch.Tensor:
        """The step per unit λ: G (H + λ_d I)^-1 in the Hessian metric, G itself in the identity metric."""
        if self.params.metric == "identity":
            return G
        if factored is None:  # asked for in score_request; absent only when no float Hessians were summed
            raise ConfigError("likelihood_pairs: the Hessian metric needs the float model's Hessians here")
        return apply_inverse(factored, G)

    def _target_lambda(self, B0: float) -> float:
        """One λ for every module: target · B₀ / Σ tr(G H^-1 Gᵀ) over the float-model Hessians."""
        total = sum(self._traces.values())
        if total <= 0:
            logger.warning("likelihood_pairs: the preference's gradient is 0 on every targeted module; no step")
            return 0.0
        return self.params.target * B0 / total

    def float_model_update(self) -> dict[str, torch.Tensor] | None:
        return self._before

    def linear(self, layer: int, role: str, module: str, factored: FactoredHessian) -> LinearTerm | None:
        """λ G, with λ sized for this module's own H when a target is given (module docstring)."""
        if self.params.when == "before" or module not in self._grads:
            return None
        G = self._grads[module]
        if self._lambda is not None:
            lam = self._lambda
            self._check_size(module, lam, lam * float((G * self._direction(G, factored)).sum()))
        elif self.params.metric == "identity":  # the traces are exact here: one λ for every module
            lam = self._target_lambda(self._measured["calibration_preference"])
        else:
            trace = float((G * apply_inverse(factored, G)).sum())
            total = sum(self._traces.values())
            share = self._traces[module] / total if total > 0 else 0.0
            goal = self.params.target * self._measured["calibration_preference"] * share
            lam = goal / trace if trace > 0 else 0.0
        self._measured.setdefault("lambda_by_module", {})[module] = lam
        C = lam * G if self.params.metric == "hessian" else lam * apply_damped(factored, G)
        return LinearTerm(C, gradient=G)

    def describe(self) -> dict:
        return {"name": self.name, "pair_set": self.pair_set, "pairs": len(self.pairs),
                "pairs_sha256_16": pairs_hash(self.pairs), **self.params.describe(), **self._measured}
