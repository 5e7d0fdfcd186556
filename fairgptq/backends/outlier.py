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

``kept_channels``: an int is a count of channels; a float in (0, 1) a fraction of in_features
(rounded, at least one).  0 is plain GPTQ.

Export layout of a module with kept columns (QuantizedWeight.outlier_idx / outlier_weight):
``outlier_idx`` int32 (k,) ascending input-column indices; ``outlier_weight`` fp16
(out, k); the integer codes of those columns hold their group's zero point, so the GPTQ
tensors alone read back 0 there and Ŵ = dequant(codes) + scatter(outlier_weight).
"""
from __future__ import annotations

import torch

from ..contract import Backend, ConfigError
from .cpu import CpuBackend
from .cuda import CudaBackend

CRITERIA = ("hessian", "owq")


def kept_count(kept_channels: int | float, dim: int) -> int:
    """Number of channels to keep out of ``dim`` (see module docstring for int vs float)."""
    k = kept_channels
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k < 0:
        raise ConfigError(f"kept_channels={k!r}: give a count (int >= 0) or a fraction (float in [0, 1))")
    if isinstance(k, float):
        if k >= 1:
            raise ConfigError(f"kept_channels={k}: a float is a fraction of the input channels and must be < 1; "
                              f"give an int for a count")
        return 0 if k == 0 else max(1, round(k * dim))
    if k > dim:
        raise ConfigError(f"kept_channels={k}, but the layer has only {dim} input channels")
    return k


def select_channels(H: torch.Tensor, kept_channels: int | float, criterion: str = "hessian",
                    W: torch.Tensor | None = None) -> torch.Tensor | None:
    """Bool mask of the input channels to keep (None when none are)."""
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion={criterion!r}: use one of {CRITERIA}")
    n = kept_count(kept_channels, H.shape[0])
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


class OutlierChannels:
    """Mixin over a placement backend (cpu or cuda): its keep mask is the top-k input channels.

    Only :meth:`keep_mask` changes; factorisation, solving, precision and inference stay the
    placement's own (fairgptq.core.backend.Backend), so ``factor_dtype`` and the rest apply unchanged.
    """

    name = "outlier"

    def _keep_top(self, kept_channels: int | float, criterion: str) -> None:
        kept_count(kept_channels, 1 << 30)  # validate now, not at the first module
        if criterion not in CRITERIA:
            raise ConfigError(f"criterion={criterion!r}: use one of {CRITERIA}")
        self.kept_channels, self.criterion = kept_channels, criterion
        self.keep_reads_weight = criterion == "owq"  # the kept channels depend on each module's weight

    def keep_mask(self, H: torch.Tensor, W: torch.Tensor | None) -> torch.Tensor | None:
        return select_channels(H, self.kept_channels, self.criterion, W)

    def describe(self) -> dict:
        return {**super().describe(), "kept_channels": self.kept_channels, "criterion": self.criterion}


class CpuOutlierBackend(OutlierChannels, CpuBackend):
    """Top-k channels kept in fp16, solved on the CPU."""

    def __init__(self, kept_channels: int | float = 0.01, criterion: str = "hessian",
                 threads: int | None = None) -> None:
        CpuBackend.__init__(self, threads)
        self._keep_top(kept_channels, criterion)


class CudaOutlierBackend(OutlierChannels, CudaBackend):
    """Top-k channels kept in fp16, solved on a CUDA device."""

    def __init__(self, kept_channels: int | float = 0.01, criterion: str = "hessian", device: str = "cuda") -> None:
        CudaBackend.__init__(self, device)
        self._keep_top(kept_channels, criterion)


def outlier_backend(kept_channels: int | float = 0.01, criterion: str = "hessian", device: str = "cpu",
                    threads: int | None = None) -> Backend:
    """The ``outlier`` backend: GPTQ with the top input channels kept in fp16, on ``cpu`` or ``cuda[:n]``."""
    kind = torch.device(device).type
    if kind == "cpu":
        return CpuOutlierBackend(kept_channels, criterion, threads)
    if kind == "cuda":
        return CudaOutlierBackend(kept_channels, criterion, str(device))
    raise ConfigError(f"device {device!r}: backends run on 'cpu' or 'cuda[:n]'")
