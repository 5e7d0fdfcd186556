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
(B → (1 − target) B₀ to first order; above 1 the step goes past the calibration pairs' parity, which
is where a model whose calibration pairs are not its evaluation's may need it), split across modules in proportion to
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

``target: auto`` chooses the strength on held-out *calibration* pairs (never the evaluation's): a
hash-chosen ``validation_fraction`` of the pairs is set aside, the gradient is taken on the rest, and
the float model is read at every target of ``auto_grid`` along that step (:class:`~fairgptq.core.
objective.StepProbe`): the validation pairs' share preferring the stereotype, and the text loss of
the first ``control_batches`` calibration batches.  The chosen target is the one whose share is
closest to 50 among those whose calibration-text perplexity stays within ``1 + auto_tolerance`` of
the float model's (ties: the smallest target, the least change).  The control is the text loss, not
StereoSet's "pair against an unrelated sentence" LMS, because (1) only StereoSet has unrelated
sentences, and the pair sources this objective calibrates on include CrowS-style, RedditBias and
template pairs that have none; (2) it costs one forward pass of batches the run holds already; and
(3) it is what the run's perplexity reads, and the issue's single-seed record shows LMS and
WikiText-2 perplexity breaking together (target 3: LMS −4.1, perplexity +2 %).  The grid and the
whole curve are recorded (``describe()``: ``auto``).  The probe steps with the float model's H (one
calibration batch, like the split of ``target``); the identity metric's step is the one the run then
takes, the Hessian metric's is sized per module with its own H (module docstring above).

On a mixture-of-experts model each routed expert's matrix (its slice of the fused ``gate_up_proj`` /
``down_proj``) is a module of its own here: G is its slice of the fused tensor's gradient through
transformers' routing, its H (the step's metric and the split's float estimate) is summed from the
tokens routed to it, and ``target`` splits over experts as over any modules (docs/architectures.md).

Tokens of the common prefix are left out of B: a causal model gives both sentences the same
probabilities there, so they cancel exactly in B and in G.

The objective is written against the public contract only (core/objective.py), as an outside
plugin would be.
"""
from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Literal, Sequence

import torch
from pydantic import Field, model_validator

from ..contract import (ConfigError, FactoredHessian, LinearTerm, Pair, PairObjective, ProbeReading, ScoreGradient,
                        ScoreRequest, StepProbe, TargetSelection, TokenBatch, apply_damped, apply_inverse,
                        common_prefix_length, encode_request, identical_pairs_advice, pad_id, pairs_hash,
                        right_padded, split_key)


logger = logging.getLogger("fairgptq.objectives")
SCORES = ("sentence", "span")
#: calibration batches whose float-model H estimates the split of a ``target`` over modules
SPLIT_BATCHES = 1
#: a given λ whose first-order step moves B by more than this many times B₀ is refused (``_check_size``)
MAX_OVERSHOOT = 100.0
#: the targets ``target: auto`` reads by default (resolution 0.25 up to 1, 0.5 beyond)
AUTO_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
#: rows per forward pass when the probe reads the validation pairs (their logits span the vocabulary)
PROBE_BATCH = 8


class LikelihoodPairParams(TargetSelection):
    """likelihood_pairs' settings: targeting, the strength (``target`` or ``lambda``), the score and the gradient.

    - ``target``: fraction (≥ 0) of the calibration pairs' preference B₀ to remove (first order); above 1
      past their parity; ``auto``: chosen on held-out calibration pairs (module docstring), with
      ``auto_grid`` (the targets read), ``validation_fraction`` (the pairs held out for it),
      ``auto_tolerance`` (the calibration-text perplexity rise allowed, as a fraction) and
      ``control_batches`` (calibration batches whose text loss is the control).
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

    target: float | Literal["auto"] | None = 0.5  # float first: a NaN is named a non-finite number
    lambda_: float | None = Field(None, ge=0, alias="lambda")
    auto_grid: list[float] = Field(default_factory=lambda: list(AUTO_GRID), min_length=2)
    validation_fraction: float = Field(0.25, gt=0, lt=1)
    auto_tolerance: float = Field(0.01, ge=0)
    control_batches: int = Field(1, ge=1)
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
            raise ValueError("give target (a fraction of the calibration preference, >= 0, or auto) or lambda")
        if isinstance(self.target, float) and not (self.target >= 0 and math.isfinite(self.target)):
            raise ValueError(f"target must be a finite fraction >= 0 or auto (got {self.target})")
        if any(not (t >= 0 and math.isfinite(t)) for t in self.auto_grid) or 0.0 not in self.auto_grid:
            raise ValueError(f"auto_grid must hold finite targets >= 0, 0 among them (the float model, the "
                             f"control's reference); got {self.auto_grid}")
        if self.when == "before" and self.gradient == "sequential":
            raise ValueError("when: before takes one step on the float model; a sequential gradient needs the "
                             "partially quantized model (use when: during)")
        return self

    def is_off(self) -> bool:
        return (self.target if self.target is not None else self.lambda_) == 0

    @property
    def auto(self) -> bool:
        return self.target == "auto"

    def without_term(self) -> "LikelihoodPairParams":
        return self.model_copy(update={"target": 0.0, "lambda_": None})

    def needs_gradients(self) -> bool:
        return not self.is_off()

    def holds_pair_activations(self) -> bool:
        """Its pairs are scored by whole-model passes (the gradient, the probe), never held layer by layer."""
        return False


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
        sides = pair_rows(p, tokenizer, score, max_length)
        if sides is None:
            blind += 1
            continue
        for (ids, w), sign in zip(sides, (1.0 / P, -1.0 / P)):
            rows.append((ids, [sign * x for x in w]))
    rows.sort(key=lambda r: len(r[0]), reverse=True)
    return (*_batched(rows, tokenizer, batch_size), blind)


def pair_rows(pair: Pair, tokenizer, score: str, max_length: int) -> tuple[tuple[list[int], list[float]], ...] | None:
    """The stereotypical and the anti-stereotypical sentence as (token ids, 0/1 weight of each scored token);
    None when the two read as identical within ``max_length`` tokens."""
    a, b = (_tokens(tokenizer, text, max_length) for text in (pair.stereo, pair.anti))
    if a == b:
        return None
    lo = common_prefix_length(a, b)
    suffix = min(common_prefix_length(a[::-1], b[::-1]), len(a) - lo, len(b) - lo)
    out = []
    for ids in (a, b):
        hi = len(ids) - suffix if score == "span" else len(ids)
        out.append((ids, [1.0 if lo <= t < hi else 0.0 for t in range(len(ids))]))
    return tuple(out)


def _batched(rows: list[tuple[list[int], list[float]]], tokenizer,
             batch_size: int) -> tuple[list[TokenBatch], list[torch.Tensor]]:
    """Rows (in the order given) as right-padded batches and their weight tensors."""
    batches, weights = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = right_padded([ids for ids, _ in chunk], pad_id(tokenizer))
        w = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        for r, (_, wt) in enumerate(chunk):
            w[r, :len(wt)] = torch.tensor(wt)
        batches.append(batch)
        weights.append(w)
    return batches, weights


def in_validation(pair: Pair, fraction: float) -> bool:
    """Whether ``target: auto`` holds ``pair`` out to choose the strength on.

    A hash of the pair's split key *salted*: the calibration pairs are already one side of the unsalted
    hash (the evaluation split), so that hash alone would put every one of them on one side here."""
    digest = hashlib.sha256(f"likelihood_pairs.validation:{split_key(pair)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def share_preferring(rows: list[torch.Tensor]) -> float:
    """Percent of pairs whose stereotypical sentence scores higher, from per-row scores in pair order."""
    scores = torch.cat(rows)
    diff = scores[0::2] - scores[1::2]
    return 100.0 * float((diff > 0).float().mean())


def choose_target(curve: list[dict], tolerance: float) -> dict:
    """The curve's point closest to parity (|share − 50|) among those within the control's tolerance;
    ties go to the smaller target.  ``curve`` rows: target, distance, perplexity_ratio."""
    allowed = [c for c in curve if c["perplexity_ratio"] is None or c["perplexity_ratio"] <= 1.0 + tolerance]
    return min(allowed or curve[:1], key=lambda c: (round(c["distance"], 9), c["target"]))


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
        # each module's step per unit λ on the float model (its float H in the Hessian metric): the traces' split,
        # the probe's steps and ``when: before``'s step all read it, so it is solved once
        self._float_directions: dict[str, torch.Tensor] = {}
        self._target: float | None = None if self.params.auto else self.params.target
        self._fit, self._validation = self.pairs, []
        if self.params.auto:
            self._validation = [p for p in self.pairs if in_validation(p, self.params.validation_fraction)]
            self._fit = [p for p in self.pairs if not in_validation(p, self.params.validation_fraction)]
            if not self._validation or not self._fit:
                raise ConfigError(f"likelihood_pairs target: auto splits the {len(self.pairs)} calibration pairs "
                                  f"into {len(self._fit)} to take the gradient on and {len(self._validation)} to "
                                  f"choose the strength on; give more pairs or another validation_fraction")

    def score_request(self, tokenizer) -> ScoreRequest | None:
        if not self.params.needs_gradients():
            return None
        if tokenizer is None:
            raise ConfigError("likelihood_pairs needs the model's tokenizer (pass tokenizer= to quantize_model)")
        batches, weights, blind = score_batches(self._fit, tokenizer, score=self.params.score,
                                                batch_size=self.batch_size, max_length=self.max_length)
        if blind:
            reason, fix = identical_pairs_advice(tokenizer, [p for p in self._fit if pair_rows(
                p, tokenizer, self.params.score, self.max_length) is None], self.max_length)
            if blind == len(self._fit):
                raise ConfigError(f"all {len(self._fit)} pairs {reason}, so their preference is 0 and there is "
                                  f"nothing to remove; {fix}")
            logger.warning("%d of %d pairs %s and add nothing to B; %s", blind, len(self._fit), reason, fix)
        before = self.params.when == "before"
        needs_h = self.params.metric == "hessian" and (before or self._lambda is None)
        return ScoreRequest(batches, weights, sequential=self.params.gradient == "sequential",
                            refresh=self.params.refresh,
                            float_hessian_batches=(None if before else SPLIT_BATCHES) if needs_h else 0,
                            probe=self._probe(tokenizer) if self.params.auto else None)

    def _probe(self, tokenizer) -> StepProbe:
        """The validation pairs (rows 2i, 2i+1: a pair's two sentences), read at every target.

        Longest pairs first, so each batch pads little; the share read from them does not depend on the order."""
        pairs = [sides for p in self._validation
                 if (sides := pair_rows(p, tokenizer, self.params.score, self.max_length)) is not None]
        pairs.sort(key=lambda sides: max(len(ids) for ids, _ in sides), reverse=True)
        rows = [side for sides in pairs for side in sides]
        if not rows:
            reason, fix = identical_pairs_advice(tokenizer, self._validation, self.max_length)
            raise ConfigError(f"likelihood_pairs target: auto: all {len(self._validation)} validation pairs "
                              f"{reason}; {fix}")
        batches, weights = _batched(rows, tokenizer, PROBE_BATCH)
        return StepProbe(sorted(set(self.params.auto_grid)), batches, weights, self.params.control_batches)

    def step_at(self, value: float) -> dict[str, torch.Tensor]:
        """The float-model step at target ``value``: −λ(value) times each module's direction (float H)."""
        lam = self._target_lambda(self._measured["calibration_preference"], value)
        return {name: -lam * D for name, D in self._float_directions.items()}

    def receive_probe(self, readings: list[ProbeReading]) -> None:
        """The validation curve, and the target chosen on it (:func:`choose_target`)."""
        base = next(r.control_loss for r in readings if r.value == 0.0)
        curve = []
        for r in readings:
            share = share_preferring(r.rows)
            ratio = None if base is None or r.control_loss is None else math.exp(r.control_loss - base)
            curve.append({"target": r.value, "validation_pct_stereotype": share, "distance": abs(share - 50.0),
                          "control_loss": r.control_loss, "perplexity_ratio": ratio})
        chosen = choose_target(curve, self.params.auto_tolerance)
        self._target = chosen["target"]
        self._measured["auto"] = {"grid": [c["target"] for c in curve], "chosen": chosen["target"],
                                  "validation_pairs": len(self._validation), "fit_pairs": len(self._fit),
                                  "tolerance": self.params.auto_tolerance,
                                  "control": f"calibration-text loss, first {self.params.control_batches} batch(es)",
                                  "curve": curve}
        logger.info("likelihood_pairs target: auto chose %.3g (validation share %.1f %%, perplexity ratio %s)",
                    chosen["target"], chosen["validation_pct_stereotype"], chosen["perplexity_ratio"])

    def receive_gradient(self, gradient: ScoreGradient, float_hessians: dict[str, FactoredHessian] | None) -> None:
        self._grads.update(gradient.grads)
        if gradient.layer is not None:  # a sequential refresh: B on the partially quantized model
            self._measured.setdefault("preference_by_layer", {})[gradient.layer] = gradient.value
            return
        self._measured["calibration_preference"] = gradient.value
        hessians = float_hessians or {}
        step_on_float = self.params.auto or self.params.when == "before"
        if self._lambda is None or step_on_float:  # a given λ during quantization asked for no float Hessians
            directions = {name: self._direction(G, hessians.get(name)) for name, G in gradient.grads.items()}
            if self._lambda is None:  # only a target is split by the traces
                self._traces = {name: float((G * directions[name]).sum()) for name, G in gradient.grads.items()}
            # kept only while a step on the float model still needs them (a probe, or when: before)
            self._float_directions = directions if step_on_float else {}

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
                          f"target (a fraction of B₀, or auto) instead")

    def _direction(self, G: torch.Tensor, factored: FactoredHessian | None) -> torch.Tensor:
        """The step per unit λ: G (H + λ_d I)^-1 in the Hessian metric, G itself in the identity metric."""
        if self.params.metric == "identity":
            return G
        if factored is None:  # asked for in score_request; absent only when no float Hessians were summed
            raise ConfigError("likelihood_pairs: the Hessian metric needs the float model's Hessians here")
        return apply_inverse(factored, G)

    def _target_lambda(self, B0: float, target: float | None = None) -> float:
        """One λ for every module: target · B₀ / Σ tr(G H^-1 Gᵀ) over the float-model Hessians."""
        total = sum(self._traces.values())
        if total <= 0:
            logger.warning("likelihood_pairs: the preference's gradient is 0 on every targeted module; no step")
            return 0.0
        return (self._target if target is None else target) * B0 / total

    def float_model_update(self) -> dict[str, torch.Tensor] | None:
        """``when: before``: the step on the float model, sized once the strength is known (after a probe).

        The driver asks after the float model's gradient and probe, so the float-model directions are let go here."""
        if self.params.when != "before" or not self._grads:
            self._float_directions = {}
            return None
        if self._before is None:
            lam = self._lambda if self._lambda is not None else self._target_lambda(
                self._measured["calibration_preference"])
            self._before = {name: -lam * D for name, D in self._float_directions.items()}
            self._measured["lambda"] = lam
            self._measured["predicted_change"] = float(sum((G * self._before[n]).sum()
                                                           for n, G in self._grads.items()))
            self._float_directions = {}
            self._check_size("the float model", lam, -self._measured["predicted_change"])
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
            goal = self._target * self._measured["calibration_preference"] * share
            lam = goal / trace if trace > 0 else 0.0
        self._measured.setdefault("lambda_by_module", {})[module] = lam
        C = lam * G if self.params.metric == "hessian" else lam * apply_damped(factored, G)
        return LinearTerm(C, gradient=G)

    def describe(self) -> dict:
        return {"name": self.name, "pair_set": self.pair_set, "pairs": len(self.pairs),
                **({"target_chosen": self._target} if self.params.auto and self._target is not None else {}),
                "pairs_sha256_16": pairs_hash(self.pairs), **self.params.describe(), **self._measured}
