"""Fused 4-bit dequantize-matmul in Triton: y = x · dequant(qweight), never materialising Ŵ.

Layout (the GPTQ checkpoint layout, so exported tensors feed it unchanged):
- ``qweight`` int32 (K/8, N): input rows 8k..8k+7 of column n packed low nibble first;
- ``scales`` (G, N) in the activation dtype, ``zeros`` int32 (G, N) unpacked zero points;
- ``g_idx`` int32 (K,): group of each input row (any order, so act-order and kept
  columns need nothing special).
Each program computes a BLOCK_M x BLOCK_N tile of y, reading BLOCK_K packed rows at a time,
dequantizing them in registers and accumulating with ``tl.dot`` in float32.

Why Triton: one readable kernel that runs on every CUDA GPU torch supports, ships with
torch's CUDA wheels, and can be checked on a CPU with ``TRITON_INTERPRET=1``.  This
module imports triton at import time; import it lazily (the cuda backend does).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CONFIGS = [
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
]
#: TRITON_INTERPRET=1 runs the kernel on CPU tensors (how the tests check it without a GPU); the
#: interpreter cannot benchmark, so it runs one fixed configuration instead of autotuning.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _dequant_matmul_int4(
    x_ptr, qw_ptr, scales_ptr, zeros_ptr, g_ptr, y_ptr, M, N, K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_ym, stride_yn,
    IEEE_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        wk_mask = mask_k[:, None] & mask_n[None, :]
        packed = tl.load(qw_ptr + (offs_k[:, None] // 8) * stride_qk + offs_n[None, :] * stride_qn,
                         mask=wk_mask, other=0)
        q = (packed >> ((offs_k[:, None] % 8) * 4)) & 0xF
        g = tl.load(g_ptr + offs_k, mask=mask_k, other=0)
        s = tl.load(scales_ptr + g[:, None] * stride_sg + offs_n[None, :] * stride_sn, mask=wk_mask, other=0.0)
        z = tl.load(zeros_ptr + g[:, None] * stride_sg + offs_n[None, :] * stride_sn, mask=wk_mask, other=0)
        w = ((q - z).to(tl.float32) * s.to(tl.float32)).to(x.dtype)
        if IEEE_FP32:
            acc += tl.dot(x, w, input_precision="ieee")
        else:
            acc += tl.dot(x, w)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


_tuned = triton.autotune(configs=CONFIGS, key=["M", "N", "K"])(_dequant_matmul_int4)


def dequant_matmul_int4(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                        g_idx: torch.Tensor) -> torch.Tensor:
    """y (M, N) = x (M, K) · dequant(qweight)ᵀ-layout (K, N), in x's dtype with float32 accumulation."""
    M, K = x.shape
    N = qweight.shape[1]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    scales, zeros = scales.contiguous(), zeros.contiguous()  # the kernel indexes both with the scales' strides

    def grid(meta):
        return triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"])

    args = (x, qweight, scales, zeros, g_idx, y, M, N, K, x.stride(0), x.stride(1), qweight.stride(0),
            qweight.stride(1), scales.stride(0), scales.stride(1), y.stride(0), y.stride(1))
    if INTERPRETED:
        _dequant_matmul_int4[grid](*args, IEEE_FP32=x.dtype == torch.float32, **CONFIGS[0].kwargs)
    else:
        _tuned[grid](*args, IEEE_FP32=x.dtype == torch.float32)
    return y
