"""The contract between the engine and objective plugins (the extra H_bias sources).

An objective contributes a PSD term (in x in, α already applied) to the GPTQ problem
of the modules it targets, computed from activations the driver captured at that
module's input.  It may ask the driver to propagate token streams of its own (the
Fair-GPTQ pair objective asks for "stereo" and "anti", row i of both holding pair i)
through the partially quantized model, exactly as the calibration text is.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


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
    """How the H_bias of a module is used (spec section 2)."""

    mode: str = "first_order"
    on_overshoot: str = "warn"


class Objective(ABC):
    """Base class of objective plugins.  Subclasses set ``name`` and implement ``term``."""

    name: str = "objective"
    settings: FairSettings = FairSettings()

    def streams(self, tokenizer) -> dict[str, list[TokenBatch]]:
        """Token streams this objective needs at every module's input (default: none)."""
        return {}

    def hessian_streams(self) -> set[str]:
        """Which of this objective's streams also build H (pairs double as calibration text)."""
        return set()

    @abstractmethod
    def applies(self, layer: int, role: str, n_layers: int) -> bool:
        """Whether this objective adds a term to (layer, role)."""

    @abstractmethod
    def term(self, layer: int, role: str, inputs: dict[str, list[Captured]]) -> torch.Tensor | None:
        """The PSD in x in term for (layer, role) from the captured inputs, α applied; None to skip."""

    def describe(self) -> dict:
        """Settings recorded in reports and checkpoints."""
        return {"name": self.name}
