"""Solving one module: optional Fair-GPTQ pre-update, then GPTQ (spec section 2).

This is the seam backends override (where and in what precision it runs, which
channels are kept in half precision); the maths lives in :mod:`fairgptq.core.gptq`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .gptq import FactoredHessian, FairUpdate, QuantizedWeight, factor_hessian, fair_update_detailed, quantize_weight
from .objective import FairSettings
from .quantizer import QuantConfig


@dataclass
class ModuleSolution:
    qweight: QuantizedWeight
    fair: FairUpdate | None


def solve_module(
    W: torch.Tensor, H: torch.Tensor, H_bias: torch.Tensor | None, config: QuantConfig,
    fair: FairSettings | None, *, module: str, factored: FactoredHessian | None = None,
    keep: torch.Tensor | None = None,
) -> ModuleSolution:
    """Quantize one weight; ``factored`` (of H, same damp, act_order and keep) is reused when given.

    ``keep`` (bool per input column) leaves those columns unrounded (see ``quantize_weight``).
    """
    if H_bias is None or fair is None:
        return ModuleSolution(quantize_weight(W, H, config, module=module, factored=factored, keep=keep), None)
    if fair.mode == "in_loop":
        qw = quantize_weight(W, H + H_bias.to(H), config, module=module, keep=keep)
        return ModuleSolution(qw, None)
    fh = factored or factor_hessian(H, config.damp, act_order=config.act_order, module=module, keep=keep)
    upd = fair_update_detailed(W, fh, H_bias, fair.mode, module=module, on_overshoot=fair.on_overshoot)
    qw = quantize_weight(upd.W, H, config, module=module, factored=fh, keep=keep)
    qw.stability.events.extend(upd.events)
    return ModuleSolution(qw, upd)
