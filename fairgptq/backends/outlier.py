"""The outlier backend: keep the top-k input channels in fp16, GPTQ the rest around them.

Fair-GPTQ's debiasing update costs some accuracy; the paper proposes recovering it by
keeping the few input channels that matter most in half precision (as OWQ, Lee et al.
2024).  The kept columns are ordered last in the GPTQ loop, so they are never rounded and
absorb the error feedback of every quantized column: the optimal compensation, since
GPTQ's update of the columns still to do is the least-squares correction given the
rounded ones.  Group grids are fitted on the quantized columns only, so an outlier no
longer stretches its group's range.

Channel choice (``criterion``):
- ``hessian``: largest diag H.  diag H_jj = 2/N Σ_s ‖x_j‖², the squared activation norm
  of channel j, so this is also the activation-norm ranking.  Modules reading the same
  input keep the same channels and share one factorisation.
- ``owq``: largest diag H_jj · ‖W_:,j‖² (OWQ's sensitivity: the loss of zeroing the
  column); per module, so each module factors its own Hessian.

``k``: an int is a count of channels; a float in (0, 1) a fraction of in_features
(rounded, at least one).  k = 0 is plain GPTQ.

Export layout of a module with kept columns (QuantizedWeight.outlier_idx / outlier_weight):
``outlier_idx`` int32 (k,) ascending input-column indices; ``outlier_weight`` fp16
(out, k); the integer codes of those columns hold their group's zero point, so the GPTQ
tensors alone read back 0 there and Ŵ = dequant(codes) + scatter(outlier_weight).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from ..core.errors import ConfigError
from ..core.gptq import FactoredHessian, QuantizedWeight, factor_hessian
from ..core.hessian import HessianAccumulator
from ..core.objective import FairSettings
from ..core.quantizer import QuantConfig
from ..core.solve import ModuleSolution, solve_module
from .base import Backend

CRITERIA = ("hessian", "owq")


def kept_count(k: int | float, dim: int) -> int:
    """Number of channels to keep out of ``dim`` (see module docstring for int vs float)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k < 0:
        raise ConfigError(f"k={k!r}: give a count (int >= 0) or a fraction (float in [0, 1))")
    if isinstance(k, float):
        if k >= 1:
            raise ConfigError(f"k={k}: a float is a fraction of the input channels and must be < 1; "
                              f"give an int for a count")
        return 0 if k == 0 else max(1, round(k * dim))
    if k > dim:
        raise ConfigError(f"k={k} channels to keep, but the layer has only {dim} input channels")
    return k


def select_channels(H: torch.Tensor, k: int | float, criterion: str = "hessian",
                    W: torch.Tensor | None = None) -> torch.Tensor | None:
    """Bool mask of the input channels to keep (None when none are)."""
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion={criterion!r}: use one of {CRITERIA}")
    n = kept_count(k, H.shape[0])
    if n == 0:
        return None
    score = torch.diagonal(H).float()
    if criterion == "owq":
        if W is None:
            raise ConfigError("criterion 'owq' scores channels by diag H · ‖W_j‖²: the weight is needed")
        score = score * W.float().to(score.device).pow(2).sum(dim=0)
    keep = torch.zeros(H.shape[0], dtype=torch.bool, device=H.device)
    keep[torch.topk(score, n).indices] = True
    return keep


class OutlierBackend(Backend):
    """GPTQ with the top-k input channels kept in fp16, placed on the CPU or a CUDA device."""

    name = "outlier"

    def __init__(self, k: int | float = 0.01, criterion: str = "hessian", device: str = "cpu",
                 threads: int | None = None) -> None:
        from . import placement
        self.placement = placement(device, threads)
        super().__init__(self.placement.device, hessian_dtype=self.placement.hessian_dtype,
                         factor_dtype=self.placement.factor_dtype)
        kept_count(k, 1 << 30)  # validate now, not at the first module
        if criterion not in CRITERIA:
            raise ConfigError(f"criterion={criterion!r}: use one of {CRITERIA}")
        self.k, self.criterion = k, criterion

    @contextmanager
    def activate(self) -> Iterator[None]:
        with self.placement.activate():
            yield

    def hessian_accumulator(self, dim: int) -> HessianAccumulator:
        return self.placement.hessian_accumulator(dim)

    def factor(self, H: torch.Tensor, config: QuantConfig, *, module: str) -> FactoredHessian | None:
        if self.criterion == "owq":
            return None  # the kept channels depend on each module's weight
        H = H.to(self.device)
        return factor_hessian(H, config.damp, act_order=config.act_order, module=module,
                              keep=select_channels(H, self.k), factor_dtype=self.factor_dtype)

    def solve(self, W: torch.Tensor, H: torch.Tensor, H_bias: torch.Tensor | None, config: QuantConfig,
              fair: FairSettings | None, *, module: str, factored: FactoredHessian | None = None) -> ModuleSolution:
        W, H = W.to(self.device), H.to(self.device)
        H_bias = None if H_bias is None else H_bias.to(self.device)
        keep = factored.keep if factored is not None else select_channels(H, self.k, self.criterion, W)
        with self.placement.solving():
            return solve_module(W, H, H_bias, config, fair, module=module, factored=factored, keep=keep)

    def make_inference_linear(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None) -> nn.Module:
        return self.placement.make_inference_linear(qweight, bias)

    def describe(self) -> dict:
        return {**self.placement.describe(), "name": self.name, "k": self.k, "criterion": self.criterion}
