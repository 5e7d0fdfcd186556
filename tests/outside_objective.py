"""An objective plugin written outside the package, whose strength is not called ``alpha`` (test fixture).

``ridge`` adds the quadratic term H_bias = weight · I to each targeted module (½ weight ‖W'‖²: the exact
update shrinks the weights), and its own sentences (``texts``) may also build H.  It exists to prove the
pipeline asks an objective (is it off, what is its plain twin, which roles, does it bring data for H)
instead of reading fair_pairs' setting names; it is not a debiasing method.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from fairgptq.contract import FairSettings, TargetSelection, TargetedObjective, hookimpl, text_batches, validated


class RidgeParams(TargetSelection):
    weight: float = Field(0.1, ge=0)
    texts: list[str] = Field(default_factory=list)

    def is_off(self) -> bool:
        return self.weight == 0

    def without_term(self) -> "RidgeParams":
        return self.model_copy(update={"weight": 0.0})

    def builds_hessian(self) -> bool:
        return bool(self.texts)


class RidgeObjective(TargetedObjective):
    name = "ridge"
    Params = RidgeParams
    settings = FairSettings(mode="exact")

    def __init__(self, **settings: Any) -> None:
        self.params = validated(RidgeParams, settings, "objective ridge")

    def streams(self, tokenizer) -> dict:
        return {"ridge:texts": text_batches(tokenizer, self.params.texts, batch_size=4)} if self.params.texts else {}

    def term(self, layer: int, role: str, inputs: dict) -> torch.Tensor | None:
        dim = next(iter(inputs.values()))[0].x.shape[-1]
        return self.params.weight * torch.eye(dim)


@hookimpl
def fairgptq_objectives():
    return {"ridge": RidgeObjective}
