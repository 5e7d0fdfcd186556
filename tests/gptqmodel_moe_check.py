"""Run as a script: load a fairgptq MoE export with GPTQModel and compare it with what fairgptq stored.

A separate process because GPTQModel's ``defuser`` replaces transformers' MoE block classes
process-wide (Mixtral's and Qwen2-MoE's sparse blocks become per-expert ``nn.Linear`` blocks), which
would change every tiny MoE model a later test in the same process builds.

Usage: ``python gptqmodel_moe_check.py FOLDER...``; each FOLDER holds an export and ``expected.pt``
({"weights": {stored module: float16 (out, in)}, "ids": ..., "logits": ...}).  Prints one JSON line
per folder (one process for all: importing GPTQModel takes most of the time).
"""
from __future__ import annotations

import json
import sys

import torch
from gptqmodel import BACKEND, GPTQModel


def check(folder: str) -> None:
    expected = torch.load(f"{folder}/expected.pt")
    # the pure-torch kernel: float16, and a dequantize_weight() to compare with (the CPU's fused kernel repacks)
    model = GPTQModel.load(folder, device="cpu", dtype=torch.float16, backend=BACKEND.TORCH).model
    kernels, differ = set(), []
    for name, W in expected["weights"].items():
        module = model.get_submodule(name)
        kernels.add(type(module).__name__)
        if not torch.equal(module.dequantize_weight().T, W):
            differ.append(name)
    with torch.no_grad():
        logits = model(expected["ids"]).logits.float()
    print(json.dumps({"kernels": sorted(kernels), "checked": len(expected["weights"]), "differ": differ,
                      "block": type(model.model.layers[0].mlp).__name__,
                      "max_logit_diff": float((logits - expected["logits"]).abs().max())}))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        check(arg)
