"""Inference linears built from a QuantizedWeight, and swapping them into a model.

:class:`QuantLinear` keeps the integer codes, the group grids and the half-precision
outlier columns as buffers (so ``state_dict`` and ``.to()`` work) and computes
x Ŵᵀ + b with Ŵ read back exactly as :meth:`QuantizedWeight.dequantize` does.  It
dequantizes once per (device, dtype) and then runs a dense matmul: on a CPU that is
the fastest correct choice (no fused int4 kernel beats MKL/oneDNN on dense floats here),
and it makes the evaluation of a quantized or exported model bit-identical to that of
the model whose weights were replaced by ``dequantize()``.

What reaches this module: :meth:`fairgptq.core.backend.Backend.make_inference_linear` and
:func:`swap_in_quantized`, a library API for running a quantized model in your own code (the
cuda backend's version runs the fused Triton int4 kernel).  No ``fairgptq`` command uses it:
``fairgptq eval`` loads exported checkpoints with their weights dequantized
(fairgptq.export.loader); the tests check both linears against the dequantized weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gptq import QuantizedWeight
from .experts import is_routed_expert

PACK = 8  # 4-bit codes per int32 word


class QuantLinear(nn.Module):
    """y = x Ŵᵀ + b for Ŵ = dequantize(codes, scales, zeros, g_idx) with the kept columns overwritten."""

    def __init__(self, qweight: QuantizedWeight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.bits, self.group_size, self.sym = qweight.bits, qweight.group_size, qweight.sym
        self.register_buffer("codes", qweight.codes.to(torch.uint8))
        self.register_buffer("scales", qweight.scales)
        self.register_buffer("zeros", qweight.zeros)
        self.register_buffer("g_idx", qweight.g_idx.to(torch.int32))
        self.register_buffer("outlier_idx", qweight.outlier_idx)
        self.register_buffer("outlier_weight", qweight.outlier_weight)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._dense: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def stored_codes(self) -> torch.Tensor:
        """The integer codes (out x in, uint8) as this module stores them."""
        return self.codes

    def quantized_weight(self) -> QuantizedWeight:
        """The engine's view of the stored tensors (for export and checks)."""
        return QuantizedWeight(codes=self.stored_codes(), scales=self.scales, zeros=self.zeros, g_idx=self.g_idx,
                               bits=self.bits, group_size=self.group_size, sym=self.sym,
                               outlier_idx=self.outlier_idx, outlier_weight=self.outlier_weight)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """Ŵ in ``dtype``, computed once per device and dtype (the buffers never change after construction)."""
        key = (self.scales.device, dtype)
        if key not in self._dense:
            self._dense[key] = self.quantized_weight().dequantize(dtype)
        return self._dense[key]

    def _apply(self, fn, recurse: bool = True):
        self._dense.clear()  # a device or dtype move invalidates the cached dense weight
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dense_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        kept = 0 if self.outlier_idx is None else self.outlier_idx.numel()
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, sym={self.sym}, kept_columns={kept}")


def swap_in_quantized(model: nn.Module, qweights: dict[str, QuantizedWeight], backend) -> int:
    """Replace each named ``nn.Linear`` by ``backend.make_inference_linear`` of its QuantizedWeight.

    ``qweights`` maps module names (as ``QuantizationResult.qweights`` does) to weights;
    returns how many linears were replaced.  Transposed (Conv1D) modules are refused: their
    engine weight is Wᵀ and the inference linear would need the layout turned back.
    """
    routed = [n for n in qweights if is_routed_expert(n)]
    if routed:
        raise TypeError(f"{routed[0]} (and {len(routed) - 1} more) is a routed expert's slice of a fused 3-D experts "
                        f"tensor, not an nn.Linear; swap_in_quantized cannot replace it: export the model and load "
                        f"it with GPTQModel (per-expert linears) or fairgptq's load_gptq_checkpoint")
    for name, qw in qweights.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if not isinstance(old, nn.Linear):
            raise TypeError(f"{name} is a {type(old).__name__}, not an nn.Linear; only nn.Linear can be swapped")
        setattr(parent, child, backend.make_inference_linear(qw, old.bias))
    return len(qweights)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) codes in 0..15 -> (K/8, N) int32 (GPTQ layout): rows 8k..8k+7 of column n, low nibble first."""
    n, k = codes.shape
    if k % PACK:
        raise ValueError(f"in_features {k} is not a multiple of {PACK}; 4-bit codes cannot be packed")
    c = codes.T.to(torch.int64).reshape(k // PACK, PACK, n)
    shifts = (torch.arange(PACK, device=codes.device, dtype=torch.int64) * 4).view(1, PACK, 1)
    word = (c << shifts).sum(dim=1)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: (K/8, N) int32 -> (N, K) uint8 codes."""
    shifts = (torch.arange(PACK, device=packed.device, dtype=torch.int32) * 4).view(1, PACK, 1)
    c = (packed.unsqueeze(1) >> shifts) & 0xF
    return c.reshape(-1, packed.shape[1]).T.to(torch.uint8)
