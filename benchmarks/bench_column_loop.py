"""The GPTQ solve with the compiled column loop (core/column_loop.py) against the torch loop, one thread.

Not part of the test suite; a script (synthetic shapes, no model or data needed):

    .venv/bin/python benchmarks/bench_column_loop.py [--threads 1] [--repeats 3]

Two SmolLM2-135M layers: 576 x 1536 (down_proj: 576 rows, 1536 input columns) and 1536 x 576
(gate/up: 1536 rows, 576 input columns), a random SPD Hessian, 4-bit g128, each column order.
For each: ``quantize_weight`` with the factor given (so the timing is the solve: the column loop
plus the blocked feedback), best of ``--repeats``, with the torch loop forced and with the
compiled loop; both must give identical codes.  Also the compiled loop's one-off cost: a fresh
process that compiles into an empty numba cache, and one that loads the cache; and the report's
``reconstruction_loss`` (E H in float32, sum in float64) against the all-float64 form it replaced.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

from fairgptq.core import column_loop
from fairgptq.core.gptq import factor_for, quantize_weight, reconstruction_loss
from fairgptq.core.quantizer import QuantConfig
from profile_layer_step import best  # benchmarks/ is the script's folder, first on sys.path

LAYERS = {"576x1536 (down_proj)": (576, 1536), "1536x576 (gate/up)": (1536, 576)}
ORDERS = {"natural": {"act_order": False, "act_group_aware": False}, "act_order": {"act_order": True, "act_group_aware": False},
          "gar": {"act_order": False, "act_group_aware": True}}

FIRST_CALL = """
import time, torch
t0 = time.perf_counter()
from fairgptq.core.gptq import quantize_weight
from fairgptq.core.quantizer import QuantConfig
t1 = time.perf_counter()
W, X = torch.randn(16, 256), torch.randn(1024, 256)
quantize_weight(W, X.T @ X, QuantConfig(group_size=128, act_order=False))
print(t1 - t0, time.perf_counter() - t1)
"""


def first_call_seconds(cache_dir: str) -> dict[str, float]:
    """Import and first ``quantize_weight`` call of a fresh process with numba's cache in ``cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    imp, call = map(float, out.stdout.split())
    return {"import_s": imp, "first_call_s": call}


def loss_float64(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """The all-float64 form ``reconstruction_loss`` had before."""
    E = W.double() - W_hat.double()
    return float(((E @ H.double()) * E).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    opts = p.parse_args()
    torch.set_num_threads(opts.threads)
    report: dict = {"threads": opts.threads, "compiled_available": column_loop.compiled_kernel() is not None, "layers": {},
                    "reconstruction_loss": {}}
    if column_loop.compiled_kernel() is not None:
        with tempfile.TemporaryDirectory() as cache:
            report["cold_cache"] = first_call_seconds(cache)   # compiles and writes the cache
            report["warm_cache"] = first_call_seconds(cache)   # loads it
    g = torch.Generator().manual_seed(0)
    compiled = column_loop.runs_compiled
    for name, (rows, cols) in LAYERS.items():
        X = torch.randn(4 * cols, cols, generator=g) * (torch.rand(cols, generator=g) + 0.1)
        H = 2 * X.T @ X / X.shape[0]
        W = torch.randn(rows, cols, generator=g) * 0.05
        for order, kw in ORDERS.items():
            config = QuantConfig(bits=4, group_size=128, **kw)
            fh = factor_for(H, config)
            t_torch = t_comp = float("inf")
            for _ in range(opts.repeats):  # interleaved, so both see the same load on a shared machine
                column_loop.runs_compiled = lambda W: False
                t_torch = min(t_torch, best(lambda: quantize_weight(W, H, config, factored=fh), 1))
                column_loop.runs_compiled = compiled
                t_comp = min(t_comp, best(lambda: quantize_weight(W, H, config, factored=fh), 1))
            column_loop.runs_compiled = lambda W: False
            ref = quantize_weight(W, H, config, factored=fh)
            column_loop.runs_compiled = compiled
            same = torch.equal(quantize_weight(W, H, config, factored=fh).codes, ref.codes)
            if order == "natural":
                W_hat = ref.dequantize()
                f64, f32 = loss_float64(W, W_hat, H), reconstruction_loss(W, W_hat, H)
                report["reconstruction_loss"][name] = {
                    "float64_s": round(best(lambda: loss_float64(W, W_hat, H), opts.repeats), 4),
                    "float32_product_s": round(best(lambda: reconstruction_loss(W, W_hat, H), opts.repeats), 4),
                    "relative_difference": abs(f32 - f64) / f64}
            report["layers"][f"{name} {order}"] = {
                "torch_loop_s": round(t_torch, 4), "compiled_s": round(t_comp, 4),
                "torch_us_per_column": round(1e6 * t_torch / cols, 1),
                "compiled_us_per_column": round(1e6 * t_comp / cols, 1),
                "speedup": round(t_torch / t_comp, 1), "identical_codes": same}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
