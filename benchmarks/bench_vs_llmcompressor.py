"""fairgptq against an established GPTQ implementation (llm-compressor's GPTQModifier), same run.

Same model (SmolLM2-135M-Instruct, float32), same 4-bit symmetric grid with group 64, damp
0.01, block 128, static activation ordering (llm-compressor's default, named explicitly), the
same 64 WikiText-2 validation windows of 512 tokens (the token ids are handed to the peer, so
the calibration is identical), the same threads.  The peer runs in a
subprocess with ``$FAIRGPTQ_PEER_PYTHON`` (default: this interpreter), because llm-compressor
pins its own transformers and lives best in its own venv:

    python -m venv .venv-peer && .venv-peer/bin/pip install torch==2.13.0 llmcompressor
    FAIRGPTQ_PEER_PYTHON=.venv-peer/bin/python .venv/bin/python -m pytest benchmarks/bench_vs_llmcompressor.py -s

The peer writes its quantized (dequantized-value) linear weights to safetensors; both
results are then scored here by the same WikiText-2 perplexity (test split, first 16384
tokens, 2048-token windows: the protocol of the reference figures 17.05 float / 23.44 RTN).
Wall times are each tool's quantization call only (model loading excluded).
Goal: fairgptq time <= 0.8 x the peer's, perplexity no more than 0.5 % worse.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench_backends import cpu_load, ppl, quantize_timed, smollm2, write_result  # noqa: F401  (smollm2 is a fixture)
from bench_three_way import LLMCOMPRESSOR_PREFIX, PEER_ENV
from fairgptq.core.quantizer import QuantConfig

BITS, GROUP, DAMP, N_CAL, SEQLEN = 4, 64, 0.01, 64, 512

PEER_SCRIPT = LLMCOMPRESSOR_PREFIX + r"""recipe = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"], dampening_frac=args["damp"],
                      block_size=128, actorder="static")
t0 = time.perf_counter()
oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=ids.shape[1], num_calibration_samples=ids.shape[0])
seconds = time.perf_counter() - t0
weights, levels = {}, 0
for name, mod in model.named_modules():
    if isinstance(mod, torch.nn.Linear) and name != "lm_head":
        w = mod.weight.detach().float().contiguous()
        weights[name + ".weight"] = w
        groups = w.reshape(w.shape[0], -1, args["group_size"])
        levels = max(levels, max(len(torch.unique(groups[r, g])) for r in (0, w.shape[0] - 1) for g in (0, -1)))
save_file(weights, args["out"])
print("PEER_RESULT " + json.dumps({"seconds": seconds, "llmcompressor": llmcompressor.__version__,
                                   "torch": torch.__version__, "max_levels_per_group": levels,
                                   "threads": torch.get_num_threads()}))
"""


def peer_python() -> str:
    return os.environ.get(PEER_ENV, sys.executable)


def peer_unavailable_reason(python: str) -> str | None:
    """Why llm-compressor cannot run under ``python`` (None when it can)."""
    try:
        out = subprocess.run([python, "-c", "import llmcompressor"], capture_output=True, text=True, timeout=300)
    except OSError as e:
        return f"{PEER_ENV}={python!r} cannot be started ({e})"
    if out.returncode != 0:
        return (f"llm-compressor is not importable by {python} ({out.stderr.strip().splitlines()[-1:]}); install it "
                f"in a separate venv and point {PEER_ENV} at its python")
    return None


def run_peer(python: str, model_dir: Path, ids: torch.Tensor, workdir: Path, threads: int) -> tuple[dict, Path]:
    cal, out = workdir / "calibration.pt", workdir / "peer_weights.safetensors"
    torch.save(ids, cal)
    args = {"model": str(model_dir), "calibration": str(cal), "out": str(out), "bits": BITS, "group_size": GROUP,
            "damp": DAMP, "threads": threads}
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", PEER_SCRIPT, json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the peer failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("PEER_RESULT "))
    return {**json.loads(line[len("PEER_RESULT "):]), "process_wall_s": wall}, out


def load_linear_weights(model, path: Path):
    """A copy of the float model with the peer's quantized linear weights written in."""
    from safetensors.torch import load_file
    m = copy.deepcopy(model)
    for name, w in load_file(str(path)).items():
        m.get_parameter(name).data.copy_(w)
    return m


@pytest.mark.real_model
def test_fairgptq_vs_llmcompressor(benchmark, smollm2, tmp_path):
    python = peer_python()
    reason = peer_unavailable_reason(python)
    if reason:
        pytest.skip(reason)
    from fairgptq.datasets_adapters.wikitext import calibration_windows

    model, tok = smollm2
    threads = torch.get_num_threads()
    calibration = calibration_windows(tok, n=N_CAL, seqlen=SEQLEN, seed=0)
    ids = torch.cat([b.input_ids for b in calibration])
    model_dir = tmp_path / "smollm2"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    # llm-compressor's default is "static" activation ordering (act-order with groups fixed before
    # the column loop); it is named in the peer's recipe and matched here, so the grids are the same.
    config = QuantConfig(bits=BITS, group_size=GROUP, sym=True, damp=DAMP, block_size=128, act_order=True,
                         static_groups=True)

    load_before = cpu_load()
    ours: dict = {}

    def run_ours():
        ours["model"], ours["s"], _ = quantize_timed(model, tok, calibration, config)

    benchmark.pedantic(run_ours, rounds=1, iterations=1)
    load_between = cpu_load()
    peer, weights = run_peer(python, model_dir, ids, tmp_path, threads)
    load_after = cpu_load()
    ppl_ours, ppl_peer = ppl(ours["model"], tok), ppl(load_linear_weights(model, weights), tok)

    data = {"model": "SmolLM2-135M-Instruct", "bits": BITS, "group_size": GROUP, "sym": True, "damp": DAMP,
            "actorder": "static",
            "calibration": f"{N_CAL} x {SEQLEN} WikiText-2 valid (seed 0), same ids", "threads": threads,
            "fairgptq_s": ours["s"], "peer_s": peer["seconds"], "time_ratio": ours["s"] / peer["seconds"],
            "fairgptq_ppl": ppl_ours, "peer_ppl": ppl_peer, "ppl_rel_diff": ppl_ours / ppl_peer - 1.0,
            "peer": peer, "load_1min": [load_before, load_between, load_after],
            "goals": {"time_ratio": 0.8, "ppl_rel_diff": 0.005}}
    assert peer["max_levels_per_group"] <= 2 ** BITS, "the peer's weights are not on a 4-bit grid"
    benchmark.extra_info.update({k: v for k, v in data.items() if k != "peer"})
    write_result("vs_llmcompressor", data)
    print(json.dumps(data, indent=2))
