"""Backends: where and in what precision modules are solved, and how quantized linears run.

The contract and its default live in :mod:`fairgptq.core.backend`; this package holds the
built-in plugins: ``cpu`` (always works), ``cuda`` (GPU solve, Triton int4 inference) and
``outlier`` (top-k input channels kept in fp16, on either device).  Third-party backends
register through the ``fairgptq_backends`` hook (see fairgptq.contract.hooks).
"""
from __future__ import annotations

from ..contract import Backend
from ..core.quant_linear import QuantLinear, swap_in_quantized
from .cpu import CpuBackend
from .cuda import CudaBackend
from .outlier import outlier_backend

__all__ = ["Backend", "CpuBackend", "CudaBackend", "QuantLinear", "outlier_backend", "swap_in_quantized"]
