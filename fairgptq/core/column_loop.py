"""GPTQ's inner column loop compiled with numba: the same float32 operations, without torch's per-call overhead.

``quantize_weight`` (core/gptq.py) spends most of its time in the per-column loop inside a block:
about twenty small tensor operations per column, each costing microseconds of dispatch whatever its
size.  :func:`quantize_columns` runs exactly those steps for a run of columns of one block, compiled:

    q      = clamp(round_half_even(w / scale) + zero, 0, maxq)
    err    = (w - scale * (q - zero)) / U[i, i]
    W[:, j] -= err * U[i, j]        for the block's later columns j (product rounded, then subtracted)

It gives bit-identical codes and errors to the torch loop because every value is computed by the
same IEEE float32 operations in the same order: no fastmath (so no reassociation, and LLVM does
not contract the multiply and the subtraction into a fused multiply-add: the generated code has
separate multiplies and subtractions), true division rather than a multiplication by a
reciprocal, ``rint`` (round half to even) as ``torch.round``.  Rows are independent inside a block
(a row's error only updates that row), so the kernel takes 64 rows at a time, transposed into a
buffer that stays in L1 cache, and runs the column loop on them with the update vectorised along
the rows; each value still receives its updates in the same column order.

The compiled loop serves CPU tensors when numba is installed; CUDA tensors (the ``cuda``
backend), and any machine without numba, run the torch loop written out in ``quantize_weight``.
numba is imported at the first quantization, not with fairgptq (it costs about half a second).
``cache=True`` keeps the compiled machine code on disk (numba's cache next to this file, or its
user cache directory), so the one-off compile (about a second) is paid once per install.
"""
from __future__ import annotations

from functools import cache
from typing import Callable

import numpy as np
import torch


def runs_compiled(W: torch.Tensor) -> bool:
    """Whether ``quantize_weight`` takes the compiled loop for a weight on ``W``'s device (CPU, numba present)."""
    return W.device.type == "cpu" and compiled_kernel() is not None


def quantize_columns(W1: torch.Tensor, U1: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                     group: torch.Tensor, maxq: int, start: int, stop: int, Err1: torch.Tensor,
                     codes: torch.Tensor, i1: int) -> None:
    """Quantize columns ``start..stop`` of the block at loop position ``i1``, as the torch loop of ``quantize_weight``.

    W1 (rows x B, float32, contiguous): the block's error-corrected weights; the columns after
    ``stop`` receive the feedback of the columns done here, in place (so a dynamic group fitted
    after this call sees it; the columns done are not read again and keep their values).  U1 (B x B):
    the block of the inverse Cholesky factor.  ``scales``/``zeros`` (n_groups x rows) with ``group``
    (B, each block column's group) give every column its grid, so static, dynamic and reordered
    groups are one case.  Fills Err1 (rows x B, the scaled errors) at those columns and ``codes``
    (rows x in, float, loop order) at loop positions ``i1 + start .. i1 + stop``.
    """
    compiled_kernel()(W1.numpy(), U1.contiguous().numpy(), scales.numpy(), zeros.numpy(), group.numpy(),
                      np.float32(maxq), start, stop, Err1.numpy(), codes.numpy(), i1)


#: numba's options: IEEE division by zero (inf/nan as torch) without a check; no ``fastmath``, which
#: would let LLVM reorder and fuse float operations (tests/test_column_loop.py checks the code it makes).
JIT_OPTIONS = {"error_model": "numpy"}

#: Rows handled together: a tile of the block, transposed so the rank-1 update runs along contiguous rows
#: (one vector operation per 8 of them) and stays in L1 cache (B x 64 floats is 32 KiB for B = 128).
ROW_TILE = 64


def _kernel(W1: np.ndarray, U1: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group: np.ndarray,
            maxq: np.float32, start: int, stop: int, Err1: np.ndarray, codes: np.ndarray, i1: int) -> None:
    """:func:`quantize_columns` on numpy arrays, compiled by :func:`compiled_kernel`."""
    rows, width = W1.shape
    lo = np.float32(0.0)
    T = np.empty((width, ROW_TILE), dtype=np.float32)    # T[j, r] = W1[r0 + r, j]
    err = np.empty(ROW_TILE, dtype=np.float32)
    for r0 in range(0, rows, ROW_TILE):
        n = min(ROW_TILE, rows - r0)
        for j in range(start, width):
            for r in range(n):
                T[j, r] = W1[r0 + r, j]
        for i in range(start, stop):
            g = group[i]
            d = U1[i, i]
            for r in range(n):
                scale = scales[g, r0 + r]
                zero = zeros[g, r0 + r]
                w = T[i, r]
                q = np.rint(w / scale) + zero
                if q < lo:
                    q = lo
                elif q > maxq:
                    q = maxq
                codes[r0 + r, i1 + i] = q
                e = (w - scale * (q - zero)) / d
                err[r] = e
                Err1[r0 + r, i] = e
            for j in range(i + 1, width):  # the rank-1 update: product rounded, then subtracted
                u = U1[i, j]
                for r in range(n):
                    T[j, r] -= err[r] * u
        for j in range(stop, width):  # the columns still to do carry the feedback back
            for r in range(n):
                W1[r0 + r, j] = T[j, r]


@cache
def compiled_kernel() -> Callable[..., None] | None:
    """The compiled kernel, made on first use (importing numba costs half a second: only runs that
    quantize pay it); None where numba is not installed (or not for this numpy), so the torch loop runs."""
    try:
        import numba
    except ImportError:
        return None
    try:
        return numba.njit(cache=True, **JIT_OPTIONS)(_kernel)
    except RuntimeError:  # no writable cache directory (read-only install and home): compile once per process
        return numba.njit(**JIT_OPTIONS)(_kernel)
