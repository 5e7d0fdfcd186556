"""The CUDA backend: Hessians, factorisation and the column loop on the GPU; a fused int4 linear.

Precision: H is summed in float32 with TF32 switched off for the run (``activate``), because
a TF32 ``addmm`` keeps 10 mantissa bits and GPTQ's error feedback amplifies Hessian errors;
the factorisation stays float64 by default (cheap at d <= 16k on data-centre GPUs; pass
``factor_dtype="float32"`` on consumer GPUs with slow float64).

Placement: the backend solves on its device whatever device the model is on; for the
calibration forwards to run on the GPU too, load the model there (``load_model(..., device="cuda")``).

Inference (``make_inference_linear``, a library API: no ``fairgptq`` command calls it; see
fairgptq.core.quant_linear): 4-bit weights with in_features divisible by 8 use the Triton kernel
of :mod:`.triton_kernel` (dequantize in registers, never materialise Ŵ); other widths and bit
widths, or a machine without triton, fall back to :class:`QuantLinear`.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from ..contract import Backend, ConfigError
from ..core.gptq import QuantizedWeight
from ..core.quant_linear import QuantLinear, pack_int4, unpack_int4


def cuda_unavailable_reason() -> str | None:
    """Why the cuda backend cannot run here (None when it can)."""
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (CPU-only build or no GPU)"
    return None


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


class TritonQuantLinear(QuantLinear):
    """QuantLinear whose CUDA forward is the fused int4 kernel; the kept columns add a small dense matmul."""

    def __init__(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None) -> None:
        super().__init__(qweight, bias)
        self.register_buffer("qweight", pack_int4(qweight.codes))
        del self.codes  # the packed words replace the one-byte codes (4x less memory)

    def stored_codes(self) -> torch.Tensor:
        return unpack_int4(self.qweight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            return super().forward(x)
        from .triton_kernel import dequant_matmul_int4
        flat = x.reshape(-1, self.in_features).contiguous()
        # Kept columns' codes hold their zero point (the integer part reads 0 there), so they are added apart.
        y = dequant_matmul_int4(flat, self.qweight, self.scales.to(x.dtype).contiguous(),
                                self.zeros.to(torch.int32).contiguous(), self.g_idx)
        if self.outlier_idx is not None:
            y = y + flat[:, self.outlier_idx.long()] @ self.outlier_weight.to(x.dtype).T
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)


class CudaBackend(Backend):
    """Solve on a CUDA device; ``kernel``: "triton" (fused int4 when possible) or "dequant" (dense)."""

    name = "cuda"

    def __init__(self, device: str = "cuda", *, hessian_dtype: str = "float32", factor_dtype: str = "float64",
                 kernel: str = "triton") -> None:
        reason = cuda_unavailable_reason()
        if reason:
            raise ConfigError(f"backend 'cuda' cannot run: {reason}. Use backend 'cpu' on this machine.")
        if kernel not in ("triton", "dequant"):
            raise ConfigError(f"kernel={kernel!r}: use 'triton' or 'dequant'")
        super().__init__(device, hessian_dtype=hessian_dtype, factor_dtype=factor_dtype)
        self.kernel = kernel

    @contextmanager
    def activate(self) -> Iterator[None]:
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before

    def make_inference_linear(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None) -> nn.Module:
        fused = (self.kernel == "triton" and triton_available() and qweight.bits == 4
                 and qweight.shape[1] % 8 == 0)
        cls = TritonQuantLinear if fused else QuantLinear
        return cls(qweight, bias).to(self.device)

    def describe(self) -> dict:
        return {**super().describe(), "kernel": self.kernel, "gpu": torch.cuda.get_device_name(self.device)}
