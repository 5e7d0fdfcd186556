"""The contract between the engine and objective plugins: terms of the layer objective.

For a module with weight W (out x in), calibration Hessian H = (2/N) Σ X Xᵀ and damping λ,
the engine minimises, before GPTQ rounds the result,

    L(W') = ½ tr((W' − W) H (W' − W)ᵀ)  +  ½ tr(W' H_bias W'ᵀ)  +  ⟨C, W' − W⟩

and an objective contributes either or both extra terms to the modules it targets:

- a **quadratic** term H_bias (in x in, PSD, α applied; :meth:`Objective.term`), shared by the
  modules reading one input, built from activations the driver captured at that input (the
  Fair-GPTQ pair term: H_bias = (2α/P) Σ_p D_p D_pᵀ over pair differences);
- a **linear** term C (out x in, per module; :meth:`Objective.linear`).  Optimal Brain Surgeon drops
  it because trained weights sit at a minimum of the *training* loss; they do not sit at a minimum
  of a bias score S, so C = λ ∂S/∂W moves the solution along −∂S/∂W in the metric GPTQ already
  measures error in.  An objective that wants gradients of a score asks for them
  (:meth:`Objective.score_request`); the driver runs the forward and backward passes and hands the
  result back (:meth:`Objective.receive_gradient`).

How each mode solves L is in :func:`fairgptq.core.gptq.fair_update_detailed` (pre-update, then
ordinary GPTQ rounding).  An objective may also ask the driver to propagate token streams of its
own through the partially quantized model (the pair objective's "stereo" and "anti" streams,
row i of both holding pair i), exactly as the calibration text is.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ConfigDict

from .errors import ConfigError
from .plain_numbers import PlainNumbers

if TYPE_CHECKING:
    from .gptq import FactoredHessian


@dataclass
class TokenBatch:
    """One batch of a token stream; mask marks real (non-pad) tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class Captured:
    """A module's input for one batch of a stream: x (batch, seq, in) and the pad mask (batch, seq)."""

    x: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class FairSettings:
    """How a module's quadratic term is solved (spec section 2): ``mode`` and the overshoot policy."""

    mode: str = "first_order"
    on_overshoot: str = "warn"


@dataclass
class ScoreRequest:
    """A score the objective wants differentiated: S = Σ_b Σ_{i,t} weights[b][i, t] · log p(ids[b][i, t] | ids[b][i, <t]).

    ``weights`` has each batch's (batch, seq) shape; position 0 of a row is never scored (nothing
    predicts it) and padding must weigh 0.  A likelihood preference over pairs is +1/P on the
    stereotypical sentence's scored tokens and −1/P on the anti-stereotypical one's.

    ``sequential``: also recompute the gradient on the partially quantized model (its earlier layers
    already rounded), every ``refresh`` layers, for the targets of those layers, instead of only once
    on the float model (each recomputation is a forward and a backward pass).
    ``float_hessian_batches``: the driver also sums, on the float model, the input Hessian of every
    targeted module over this many calibration batches (None: all of them; 0: none) and factors it
    with the run's damping, for objectives that need every module's H before the first one is
    solved (a budget split over modules, or a step taken on the float model).
    """

    batches: list[TokenBatch]
    weights: list[torch.Tensor]
    sequential: bool = False
    refresh: int = 1
    float_hessian_batches: int | None = 0
    probe: "StepProbe | None" = None


@dataclass
class StepProbe:
    """Forward-only reads along the objective's own float-model step, to choose its strength.

    After the float model's gradient (and :meth:`Objective.receive_gradient`), the driver applies
    :meth:`Objective.step_at` for every strength in ``values`` to the float model, reads each row's score
    Σ_t w · log p of ``batches`` (per row, not summed: a share of pairs needs each pair's sign) and the
    mean token loss of the first ``control_batches`` calibration batches (0: none), restores the weights,
    and hands every reading to :meth:`Objective.receive_probe`.  Nothing else of the model changes.
    """

    values: list[float]
    batches: list[TokenBatch]
    weights: list[torch.Tensor]
    control_batches: int = 1


@dataclass
class ProbeReading:
    """One strength's reading: each row's score per batch, and the control batches' mean token loss (nats)."""

    value: float
    rows: list[torch.Tensor]
    control_loss: float | None


@dataclass
class ScoreGradient:
    """S and ∂S/∂W (out x in, float32) per targeted module's full name, on the model they were taken on."""

    value: float
    grads: dict[str, torch.Tensor]
    layer: int | None = None  # the layer they were recomputed for (sequential), None: the float model's


@dataclass
class LinearTerm:
    """C of ⟨C, W' − W⟩ for one module; ``gradient`` (∂S/∂W) lets the engine report the predicted ΔS."""

    coefficient: torch.Tensor
    gradient: torch.Tensor | None = None


class ObjectiveParams(PlainNumbers):
    """An objective's settings model, and the questions a pipeline asks about them.

    A pipeline never reads an objective's setting names: it asks its settings model whether the
    term is off (the plain-GPTQ reference), for the settings without the term (the reference's
    twin, identical otherwise, so it sees the same calibration), which roles it targets (the
    held-out pair gap's "targeted" modules) and whether its pair set also builds H.  An objective
    that declares a ``Params`` model derived from this class answers them; one whose settings are
    read off its signature is never "off" and has no twin, so a plain baseline refuses it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    def is_off(self) -> bool:
        """True when these settings add no term (the run is plain GPTQ on the same calibration)."""
        return False

    def without_term(self) -> "ObjectiveParams":
        """These settings with the term switched off and everything else kept (the plain twin)."""
        raise ConfigError(f"{type(self).__name__} cannot switch its term off: give the objective's settings "
                          f"model an is_off / without_term pair (core/objective.py, ObjectiveParams)")

    def targeted_roles(self) -> list[str] | None:
        """The module roles the term applies to (None: not known from the settings alone)."""
        return None

    def depth_problems(self, n_layers: int, *, idle: bool = True) -> list[tuple[str, str]]:
        """(setting, message) for what a model of ``n_layers`` decoder layers cannot satisfy (layer indices)."""
        return []

    def builds_hessian(self) -> bool:
        """Whether the objective's own sentences (pairs, texts) also build H: calibration data, not only a term.

        The one answer: the pipeline's checks ask it of the settings, and the driver builds H from
        every stream of an objective that answers True (:meth:`Objective.builds_hessian`).
        """
        return False

    def holds_pair_activations(self) -> bool:
        """Whether the objective's pairs travel through the layers beside the calibration text (their inputs held
        layer by layer, as a term on X⁰ − X¹ needs): the memory check counts their tokens only then.

        True unless the objective says otherwise, so an objective that cannot say is sized as the costly kind.
        """
        return True

    def needs_gradients(self) -> bool:
        """Whether the objective asks for score gradients (a backward pass through the whole model).

        Asked at validation, so a run that cannot take a backward pass (sequential onloading) refuses
        the objective before anything is built; the driver runs the passes only for objectives that say so.
        """
        return False

    def dump(self) -> dict[str, Any]:
        """The settings as a pipeline writes them (aliases, every default filled in)."""
        return self.model_dump(mode="json", by_alias=True)


class Objective(ABC):
    """Base class of objective plugins.  Subclasses set ``name`` and implement ``applies``.

    A subclass adds a quadratic term (override :meth:`term`), a linear term (override
    :meth:`linear`, usually with :meth:`score_request` and :meth:`receive_gradient`), or both.
    ``settings`` says how a quadratic term is solved; an objective with only a linear term
    leaves it None (every mode solves a linear term the same way).
    """

    name: str = "objective"
    settings: FairSettings | None = None
    #: the validated settings model; its answers (builds_hessian, needs_gradients) are the objective's
    params: ObjectiveParams | None = None

    def streams(self, tokenizer) -> dict[str, list[TokenBatch]]:
        """Token streams this objective needs at every module's input (default: none)."""
        return {}

    def builds_hessian(self) -> bool:
        """Whether every stream of this objective also builds H: its settings' answer, the one the pipeline checks."""
        return self.params is not None and self.params.builds_hessian()

    def needs_gradients(self) -> bool:
        """Whether the driver runs a backward pass for this objective: its settings' answer, asked at validation."""
        return self.params is not None and self.params.needs_gradients()

    def score_request(self, tokenizer) -> ScoreRequest | None:
        """The score whose gradient the linear term needs (default: none)."""
        return None

    def receive_gradient(self, gradient: ScoreGradient, float_hessians: dict[str, torch.Tensor] | None) -> None:
        """Called with the requested gradients: once on the float model, then per layer if sequential.

        ``float_hessians`` (module full name -> H on the float model) comes with the first call only,
        when the request asked for it.
        """

    def step_at(self, value: float) -> dict[str, torch.Tensor]:
        """The float-model weight change (out x in, by module full name) at strength ``value`` of a
        :class:`StepProbe` (asked only by an objective whose request carries one)."""
        raise ConfigError(f"objective {self.name!r} asked for a step probe but does not say what its step is")

    def receive_probe(self, readings: list[ProbeReading]) -> None:
        """Called once with the probe's readings, in the order of its ``values``, before any layer is solved."""

    def float_model_update(self) -> dict[str, torch.Tensor] | None:
        """Weight changes (out x in, by module full name) to make to the float model before quantizing.

        Asked once, after the float model's gradient: an objective that debiases first and lets
        GPTQ quantize the result ("debias, then quantize") returns its step here, not a linear term.
        """
        return None

    @abstractmethod
    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        """Whether this objective adds a term to (layer, role)."""

    def term(self, layer: int, role: str, inputs: dict[str, list[Captured]]) -> torch.Tensor | None:
        """The quadratic term: a PSD in x in H_bias for (layer, role) from the captured inputs, α applied."""
        return None

    def linear(self, layer: int, role: str, module: str, factored: "FactoredHessian") -> LinearTerm | None:
        """The linear term C of ``module`` (its full name), e.g. λ times the gradient it received.

        ``factored`` is the module's damped calibration Hessian (:class:`fairgptq.core.gptq.FactoredHessian`;
        :func:`~fairgptq.core.gptq.apply_inverse` gives M (H + λI)^-1), for an objective that sizes
        its step by what the step will do under this H.
        """
        return None

    def describe(self) -> dict:
        """Settings (and, after the run, what the objective measured) for reports and checkpoints."""
        return {"name": self.name}
