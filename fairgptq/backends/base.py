"""The backend contract: where and in what precision a module is solved, and how it runs afterwards."""
from __future__ import annotations

import torch

from ..core.gptq import FactoredHessian
from ..core.objective import FairSettings
from ..core.quantizer import QuantConfig
from ..core.solve import ModuleSolution, solve_module


class Backend:
    """Default behaviour: solve on the device the model lives on, Hessians in float32, factor in float64."""

    name = "cpu"

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)

    def solve(self, W: torch.Tensor, H: torch.Tensor, H_bias: torch.Tensor | None, config: QuantConfig,
              fair: FairSettings | None, *, module: str, factored: FactoredHessian | None = None) -> ModuleSolution:
        return solve_module(W, H, H_bias, config, fair, module=module, factored=factored)

    def describe(self) -> dict:
        return {"name": self.name, "device": str(self.device)}
