"""The compiled column loop (fairgptq/core/column_loop.py) against the torch loop of ``quantize_weight``.

Both run the same IEEE float32 operations in the same order per value, so on a CPU the codes,
scales, zeros, g_idx and kept columns must be bit-identical, not close: every column order, grid,
group size (smaller than the block, partial last group), keep mask, dead column and the MSE grid
search.  The torch loop is forced by making ``column_loop.runs_compiled`` answer False, the one
switch ``quantize_weight`` reads.  Layers have 70 rows, so the kernel's row tile (64) has a tail.
"""
from __future__ import annotations

import pytest
import torch

from fairgptq.core import column_loop
from fairgptq.core.gptq import quantize_weight
from fairgptq.core.quantizer import QuantConfig
from test_gptq import correlated_problem

pytest.importorskip("numba")
pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = 70


def config(order: str, **kw) -> QuantConfig:
    """A QuantConfig with its column order named (never the default, which may change)."""
    return QuantConfig(act_order=order == "act_order", act_group_aware=order == "gar", **kw)


#: (column order, other QuantConfig keywords, input columns)
CASES = {
    **{f"natural-b{b}-{'sym' if s else 'asym'}": ("natural", dict(bits=b, sym=s, group_size=128), 256)
       for b in (2, 3, 4, 8) for s in (True, False)},
    "natural-per-channel": ("natural", dict(group_size=-1), 200),
    "natural-g32-block128": ("natural", dict(group_size=32), 256),      # groups fitted mid-block
    "natural-g128-partial": ("natural", dict(group_size=128), 300),      # partial last group
    "natural-g32-block16": ("natural", dict(group_size=32, block_size=16), 96),
    "natural-per-channel-block7": ("natural", dict(group_size=-1, block_size=7), 50),
    "act_order-g128": ("act_order", dict(group_size=128), 300),
    "act_order-g32-asym3": ("act_order", dict(group_size=32, bits=3, sym=False), 200),
    "act_order-per-channel": ("act_order", dict(group_size=-1), 128),
    "act_order-static-g32": ("act_order", dict(group_size=32, static_groups=True), 200),
    "act_order-static-g128-b2": ("act_order", dict(group_size=128, static_groups=True, bits=2), 300),
    "gar-g128": ("gar", dict(group_size=128), 300),
    "gar-g32-asym": ("gar", dict(group_size=32, sym=False), 200),
    "gar-static-g32": ("gar", dict(group_size=32, static_groups=True), 200),
    "natural-mse-g32": ("natural", dict(group_size=32, mse=True, bits=3), 128),
    "act_order-mse-asym": ("act_order", dict(group_size=32, mse=True, sym=False), 128),
    "gar-mse-g128": ("gar", dict(group_size=128, mse=True), 200),
}


def both_loops(W, H, cfg, monkeypatch, **kw):
    """quantize_weight with the compiled loop, then with the torch loop forced."""
    assert column_loop.runs_compiled(W)
    compiled = quantize_weight(W, H, cfg, **kw)
    with monkeypatch.context() as m:
        m.setattr(column_loop, "runs_compiled", lambda W: False)
        torch_loop = quantize_weight(W, H, cfg, **kw)
    return compiled, torch_loop


def assert_identical(a, b):
    for name in ("codes", "scales", "zeros", "g_idx", "outlier_idx", "outlier_weight"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), f"{name} differs"


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_loop_is_bit_identical_to_the_torch_loop(name, monkeypatch):
    order, kwargs, cols = CASES[name]
    W, H = correlated_problem(ROWS, cols, seed=list(CASES).index(name))
    assert_identical(*both_loops(W, H, config(order, **kwargs), monkeypatch))


@pytest.mark.parametrize("order", ["natural", "act_order", "gar"])
@pytest.mark.parametrize("group_size, static", [(32, False), (128, False), (-1, False), (32, True)])
def test_bit_identical_with_kept_columns_and_dead_columns(order, group_size, static, monkeypatch):
    W, H = correlated_problem(ROWS, 200, seed=7)
    dead = torch.tensor([3, 64, 199])
    H[dead, :] = 0
    H[:, dead] = 0
    keep = torch.zeros(200, dtype=torch.bool)
    keep[[0, 5, 33, 34, 100, 150]] = True
    compiled, torch_loop = both_loops(W, H, config(order, group_size=group_size, static_groups=static), monkeypatch,
                                      keep=keep)
    assert compiled.outlier_idx is not None
    assert_identical(compiled, torch_loop)


def test_the_compiled_code_neither_reorders_nor_fuses_float_operations():
    """No fast-math flag on any float instruction and no fused multiply-add: what makes the results
    bit-identical on every CPU, not only on this one (the cache holds no inspectable code, so the
    kernel is compiled here once more with the same options)."""
    import numba
    kernel = numba.njit(**column_loop.JIT_OPTIONS)(column_loop._kernel)
    W, H = correlated_problem(8, 64, seed=0)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(column_loop, "compiled_kernel", lambda: kernel)
        quantize_weight(W, H, config("natural", group_size=32))
    (ir,) = kernel.inspect_llvm().values()
    float_ops = [line for line in ir.splitlines() if any(f" {op} " in line for op in ("fmul", "fsub", "fdiv", "fadd"))]
    assert any(" fmul " in line for line in float_ops) and any(" fdiv " in line for line in float_ops)
    for flag in ("fast", "contract", "reassoc", "afn", "arcp", "nnan", "ninf", "nsz"):
        assert not [line for line in float_ops if f" {flag} " in line], flag
    assert "fmuladd" not in ir and "llvm.fma" not in ir


def test_the_torch_loop_serves_tensors_off_the_cpu():
    assert not column_loop.runs_compiled(torch.empty(2, 2, device="meta"))


@pytest.mark.parametrize("order", ["natural", "gar"])
def test_bit_identical_for_a_weight_stored_transposed(order, monkeypatch):
    """A column-major weight (GPT-2's Conv1D keeps W transposed) gives column-major block buffers;
    the kernel reads them through their strides, to the same bits."""
    W, H = correlated_problem(ROWS, 200, seed=11)
    Wt = W.T.contiguous().T
    assert not Wt.is_contiguous()
    compiled, torch_loop = both_loops(Wt, H, config(order, group_size=32), monkeypatch)
    assert_identical(compiled, torch_loop)
    assert_identical(compiled, quantize_weight(W, H, config(order, group_size=32)))
