"""The backend contract: where and in what precision a module is solved, and how it runs afterwards.

A backend answers four questions for the driver (fairgptq.core.driver.quantize_model):

1. ``hessian_accumulator(dim)``: on which device and in which dtype H = 2/N Σ X Xᵀ is summed.
   Float32 is the default everywhere: the sum of 10^4–10^5 outer products of bf16/fp32
   activations loses nothing that matters to GPTQ, and float64 matmuls are slow on most GPUs.
2. ``factor(H, config)``: the shared factorisation of (H + λI)^-1 for modules reading the
   same input (float64 by default: the Cholesky of a d x d matrix is a negligible cost next to
   the column loop, and float64 is what keeps ill-conditioned Hessians factorable).
3. ``solve(W, H, H_bias, ...)``: the Fair-GPTQ pre-update and the GPTQ column loop, on
   ``self.device``.
4. ``make_inference_linear(qweight, bias)``: an ``nn.Module`` computing x Ŵᵀ + b from the
   integer codes, for evaluating quantized and exported models.

``activate()`` is entered for the whole run (thread counts, matmul precision), ``solving()``
around each module's solve.  Backends
are created by name through the plugin registry (hook ``fairgptq_backends``).
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn as nn

from ..core.gptq import FactoredHessian, QuantizedWeight, factor_hessian
from ..core.hessian import HessianAccumulator
from ..core.objective import FairSettings
from ..core.quantizer import QuantConfig
from ..core.solve import ModuleSolution, solve_module
from .linear import QuantLinear

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype_of(name: str | torch.dtype) -> torch.dtype:
    """Accept "float32"/"float64" (YAML pipelines) or a torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        from ..core.errors import ConfigError
        raise ConfigError(f"precision {name!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[name]


class Backend:
    """Default placement: everything on ``device``; H summed in float32, factored in float64.

    Subclasses change where things run (``cuda``) or what is solved (``outlier``); the
    maths stays in :mod:`fairgptq.core`.
    """

    name = "base"

    def __init__(self, device: str | torch.device = "cpu", *, hessian_dtype: str | torch.dtype = "float32",
                 factor_dtype: str | torch.dtype = "float64") -> None:
        self.device = torch.device(device)
        self.hessian_dtype = dtype_of(hessian_dtype)
        self.factor_dtype = dtype_of(factor_dtype)

    def activate(self) -> AbstractContextManager:
        """Process-wide settings held while a quantization run lasts (none by default)."""
        return nullcontext()

    def solving(self) -> AbstractContextManager:
        """Settings held while one module is solved (none by default; the cpu backend pins its threads)."""
        return nullcontext()

    def hessian_accumulator(self, dim: int) -> HessianAccumulator:
        return HessianAccumulator(dim, device=self.device, dtype=self.hessian_dtype)

    def factor(self, H: torch.Tensor, config: QuantConfig, *, module: str) -> FactoredHessian | None:
        """The factorisation shared by the modules that read H (None: each module factors its own)."""
        return factor_hessian(H.to(self.device), config.damp, act_order=config.act_order, module=module,
                              factor_dtype=self.factor_dtype)

    def solve(self, W: torch.Tensor, H: torch.Tensor, H_bias: torch.Tensor | None, config: QuantConfig,
              fair: FairSettings | None, *, module: str, factored: FactoredHessian | None = None) -> ModuleSolution:
        """Pre-update and GPTQ for one module, on this backend's device."""
        H_bias = None if H_bias is None else H_bias.to(self.device)
        with self.solving():
            return solve_module(W.to(self.device), H.to(self.device), H_bias, config, fair, module=module,
                                factored=factored)

    def make_inference_linear(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None) -> nn.Module:
        """A linear that computes x Ŵᵀ + b from ``qweight`` (dequantized once, then a dense matmul)."""
        return QuantLinear(qweight, bias).to(self.device)

    def describe(self) -> dict:
        """Settings recorded in run reports and checkpoints."""
        return {"name": self.name, "device": str(self.device), "hessian_dtype": str(self.hessian_dtype),
                "factor_dtype": str(self.factor_dtype)}
