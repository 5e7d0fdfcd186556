"""Backends: where and in what precision modules are solved, and how quantized linears run.

Built-ins: ``cpu`` (always works), ``cuda`` (GPU solve, Triton int4 inference) and
``outlier`` (top-k input channels kept in fp16, on either device).  Third-party backends
register through the ``fairgptq_backends`` hook (see fairgptq.hookspecs).
"""
from __future__ import annotations

import torch

from .base import Backend
from .cpu import CpuBackend
from .cuda import CudaBackend
from .linear import QuantLinear, swap_in_quantized
from .outlier import OutlierBackend

__all__ = ["Backend", "CpuBackend", "CudaBackend", "OutlierBackend", "QuantLinear", "placement", "swap_in_quantized"]


def placement(device: str | torch.device = "cpu", threads: int | None = None) -> Backend:
    """The plain backend for a device: ``cpu`` (with ``threads``) or ``cuda[:n]``."""
    kind = torch.device(device).type
    if kind == "cpu":
        return CpuBackend(threads)
    if kind == "cuda":
        return CudaBackend(str(device))
    from ..core.errors import ConfigError
    raise ConfigError(f"device {device!r}: backends run on 'cpu' or 'cuda[:n]'")
