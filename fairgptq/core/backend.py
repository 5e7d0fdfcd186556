"""The backend contract: where and in what precision a module is solved, and how it runs afterwards.

Every quantization run has exactly one :class:`Backend`; without one the driver uses this base
class on the model's device (plain GPTQ maths, no thread or precision settings).  Plugins
(fairgptq.backends: ``cpu``, ``cuda``, ``outlier``; third-party ones through the
``fairgptq_backends`` hook) subclass it and override only what they change:

1. ``hessian_accumulator(dim)``: on which device and in which dtype H = 2/N Σ X Xᵀ is summed.
   Float32 by default: the sum of 10^4–10^5 outer products of bf16/fp32 activations loses
   nothing that matters to GPTQ, and float64 matmuls are slow on most GPUs.
2. ``keep_mask(H, W)``: the input columns left unrounded (none by default; the outlier
   backend keeps the top-k channels).  The one hook that changes *what* is solved.
3. ``activate()`` for the whole run and ``solving()`` around each module (thread counts,
   matmul precision).
4. ``make_inference_linear(qweight, bias)``: an ``nn.Module`` computing x Ŵᵀ + b from the codes.

Factorisation and solving are not hooks: :meth:`Backend.factor` and :meth:`Backend.solve` are
the only path from a Hessian to codes, so damping, act-order, the keep mask and
``factor_dtype`` (float64 by default: the Cholesky of a d x d matrix is a negligible cost next
to the column loop, and float64 keeps ill-conditioned Hessians factorable) are applied the
same way for the shared factorisation, a module's own, and ``in_loop``'s H + H_bias.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from .errors import ConfigError
from .gptq import FactoredHessian, FairUpdate, QuantizedWeight, factor_for, fair_update_detailed, quantize_weight
from .hessian import HessianAccumulator
from .objective import FairSettings
from .quant_linear import QuantLinear
from .quantizer import QuantConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype_of(name: str | torch.dtype) -> torch.dtype:
    """Accept "float32"/"float64" (YAML pipelines) or a torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ConfigError(f"precision {name!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[name]


@dataclass
class ModuleSolution:
    qweight: QuantizedWeight
    fair: FairUpdate | None


class Backend:
    """Default placement: everything on ``device``; H summed in float32, factored in float64; nothing kept."""

    name = "base"
    #: Whether :meth:`keep_mask` reads the module's weight: then the modules reading one input
    #: cannot share a factorisation, and each module factors its own.
    keep_reads_weight: bool = False

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

    def keep_mask(self, H: torch.Tensor, W: torch.Tensor | None) -> torch.Tensor | None:
        """Bool per input column: the columns GPTQ leaves unrounded (None: round them all).

        ``W`` is None when the mask is asked for once for every module reading H (only
        when :attr:`keep_reads_weight` is false).
        """
        return None

    def factor(self, H: torch.Tensor, config: QuantConfig, *, module: str) -> FactoredHessian | None:
        """The factorisation shared by the modules that read H (None: each module factors its own)."""
        if self.keep_reads_weight:
            return None
        H = H.to(self.device)
        return self._factor(H, config, self.keep_mask(H, None), module)

    def factor_for_objectives(self, H: torch.Tensor, config: QuantConfig, *, module: str) -> FactoredHessian:
        """H factored with the run's damping and no keep mask: what an objective's linear term is sized with.

        The shared factorisation is this one when the backend has one; (H + λI)^-1 does not depend on the
        column order a keep mask imposes, so the step sized here is the step the solve takes.
        """
        return self._factor(H.to(self.device), config, None, module)

    def _factor(self, H: torch.Tensor, config: QuantConfig, keep: torch.Tensor | None,
                module: str) -> FactoredHessian:
        return factor_for(H, config, module=module, keep=keep, factor_dtype=self.factor_dtype)

    def solve(self, W: torch.Tensor, H: torch.Tensor, H_bias: torch.Tensor | None, config: QuantConfig,
              fair: FairSettings | None, *, module: str, factored: FactoredHessian | None = None,
              linear: torch.Tensor | None = None) -> ModuleSolution:
        """The objectives' pre-update, then GPTQ, for one module on this backend's device (spec section 2).

        ``H_bias`` (solved as ``fair`` says; ignored without it) and ``linear`` (C, out x in) are the
        layer objective's extra terms (core/objective.py).  ``factored`` (from :meth:`factor` on the
        same H and config) is reused when given.  ``in_loop`` runs GPTQ on H + H_bias, factored here
        with the same keep mask and dtype, from W − C (H + H_bias + λI)^-1 when there is a linear term.
        """
        W, H = W.to(self.device), H.to(self.device)
        H_bias = None if H_bias is None or fair is None else H_bias.to(self.device)
        linear = None if linear is None else linear.to(self.device)
        keep = factored.keep if factored is not None else self.keep_mask(H, W)
        with self.solving():
            if H_bias is not None and fair.mode == "in_loop":
                H_total = H + H_bias.to(H)
                fh = self._factor(H_total, config, keep, module)
                upd = None if linear is None else replace(
                    fair_update_detailed(W, fh, None, linear=linear, module=module), mode="in_loop")
                qw = quantize_weight(W if upd is None else upd.W, H_total, config, module=module, factored=fh,
                                     keep=keep)
                return ModuleSolution(qw, upd)
            fh = factored or self._factor(H, config, keep, module)
            if H_bias is None and linear is None:
                return ModuleSolution(quantize_weight(W, H, config, module=module, factored=fh, keep=keep), None)
            upd = fair_update_detailed(W, fh, H_bias, fair.mode if H_bias is not None else "exact", linear=linear,
                                       module=module, on_overshoot=fair.on_overshoot if H_bias is not None else "warn",
                                       factor_dtype=self.factor_dtype)
            qw = quantize_weight(upd.W, H, config, module=module, factored=fh, keep=keep)
            qw.stability.events.extend(upd.events)
            if upd.factor_record is not None:  # the exact update's retries and repair, as counters
                qw.stability.exact_update_attempts = upd.factor_record.attempts
                qw.stability.exact_update_eigen_repair = upd.factor_record.eigen_repair
            return ModuleSolution(qw, upd)

    def make_inference_linear(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None) -> nn.Module:
        """A linear that computes x Ŵᵀ + b from ``qweight`` (dequantized once, then a dense matmul)."""
        return QuantLinear(qweight, bias).to(self.device)

    def describe(self) -> dict:
        """Settings recorded in run reports and checkpoints."""
        return {"name": self.name, "device": str(self.device), "hessian_dtype": str(self.hessian_dtype),
                "factor_dtype": str(self.factor_dtype)}
