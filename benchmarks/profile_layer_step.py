"""Where one layer step's time goes: Hessian accumulation, factorisation, the column loop, the blocked feedback.

Not part of the test suite; a script (synthetic SmolLM2-135M shapes, so it needs no model or data):

    .venv/bin/python benchmarks/profile_layer_step.py --threads 2 [--tokens 32768] [--order gar]

The inputs of one decoder layer's modules: 576 columns (q/k/v/o, gate/up read the same 576-wide
input) and 1536 columns (down_proj), 64 x 512 = 32768 calibration tokens by default (the demo's).
Each phase is timed on its own with ``time.perf_counter`` (best of ``--repeats``); the solve is then
split into the lazy-batch feedback matmul (``aten::mm`` on the block's errors, by torch's profiler)
and the rest (the column loop, compiled on the CPU: core/column_loop.py).  On a shared CPU the absolute times vary; the shares are the
point.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from fairgptq.core.gptq import factor_for, quantize_weight
from fairgptq.core.hessian import HessianAccumulator
from fairgptq.core.quantizer import QuantConfig

#: (in_features, out_features, modules reading this input) of one SmolLM2-135M decoder layer
SHAPES = {"attn+mlp_in (576 -> q 576, k 192, v 192, gate 1536, up 1536)": (576, [576, 192, 192, 1536, 1536]),
          "o_proj (576 -> 576)": (576, [576]), "down_proj (1536 -> 576)": (1536, [576])}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def profile_solve(W: torch.Tensor, H: torch.Tensor, config: QuantConfig, fh) -> dict[str, float]:
    """Seconds of the solve: the feedback matmul (``aten::mm``, by torch's profiler) vs the rest (the column loop).

    The rest is the profiled call's wall time minus the matmul: the compiled column loop
    (core/column_loop.py) is no torch operator, so the profiler has no line for it.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        quantize_weight(W, H, config, factored=fh)
        wall = time.perf_counter() - t0
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key == "aten::mm") / 1e6
    return {"blocked feedback (aten::mm)": mm, "column loop (the rest)": wall - mm}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--order", choices=["none", "act_order", "gar"], default="none")
    opts = p.parse_args()
    torch.set_num_threads(opts.threads)
    config = QuantConfig(bits=4, group_size=128, act_order=opts.order == "act_order",
                         act_group_aware=opts.order == "gar")
    g = torch.Generator().manual_seed(0)
    report = {"threads": opts.threads, "tokens": opts.tokens, "order": opts.order, "shapes": {}}
    for name, (cols, outs) in SHAPES.items():
        X = torch.randn(opts.tokens, cols, generator=g) * (torch.rand(cols, generator=g) + 0.1)

        def accumulate():
            acc = HessianAccumulator(cols)
            for chunk in X.split(4096):        # the driver adds H batch by batch (8 windows of 512)
                acc.add(chunk.reshape(8, -1, cols))
            return acc.hessian()

        t_h = best(accumulate, opts.repeats)
        H = accumulate()
        t_f = best(lambda: factor_for(H, config), opts.repeats)
        fh = factor_for(H, config)
        Ws = [torch.randn(o, cols, generator=g) * 0.05 for o in outs]
        t_s = best(lambda: [quantize_weight(W, H, config, factored=fh) for W in Ws], opts.repeats)
        split = {k: 0.0 for k in ("blocked feedback (aten::mm)", "column loop (the rest)")}
        for W in Ws:
            for k, v in profile_solve(W, H, config, fh).items():
                split[k] += v
        total = t_h + t_f + t_s
        report["shapes"][name] = {"hessian_s": t_h, "factor_s": t_f, "solve_s": t_s, "solve_split_profiler_s": split,
                                  "share": {"hessian": t_h / total, "factor": t_f / total, "solve": t_s / total}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
