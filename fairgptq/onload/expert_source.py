"""Reading a mixture-of-experts layer's fused expert tensors from a checkpoint that stores them per expert.

transformers 5 builds each MoE layer's routed experts as two fused 3-D parameters
(``gate_up_proj`` (experts, 2 x intermediate, hidden), ``down_proj`` (experts, hidden,
intermediate)), but ``save_pretrained`` and the published checkpoints keep the original per-expert
tensors, which transformers fuses while loading: ``<experts>.<e>.gate_proj.weight`` /
``up_proj`` / ``down_proj`` (Qwen2-MoE, Qwen3-MoE, OLMoE), and Mixtral's
``block_sparse_moe.experts.<e>.w1`` (gate) / ``w3`` (up) / ``w2`` (down) with its router at
``block_sparse_moe.gate``.  Onloading reads tensors by the model's names, so a name the checkpoint
lacks is looked up in those layouts and a fused tensor is stacked from its experts, gate rows
before up rows as transformers' forward chunks them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..core.arch_spec import ArchSpec
from ..core.experts import DOWN, GATE_UP
from .source import SafetensorsSource

#: model_type -> (the checkpoint's name for the model's ``mlp`` module, its names for the projections)
CHECKPOINT_LAYOUTS: dict[str, tuple[str, dict[str, str]]] = {
    "mixtral": ("block_sparse_moe", {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}),
}


def layer_tensor_reader(source: SafetensorsSource, model: nn.Module, spec: ArchSpec
                        ) -> Callable[[str, torch.dtype], torch.Tensor | None]:
    """``read(key, dtype)``: the model's tensor ``key`` from the checkpoint, None when no layout has it."""
    module_name, projections = CHECKPOINT_LAYOUTS.get(model.config.model_type, ("mlp", {}))

    def stored(key: str) -> str | None:
        for name in (key, key.replace(".mlp.", f".{module_name}.", 1)):
            if name in source:
                return name
        return None

    def read(key: str, dtype: torch.dtype) -> torch.Tensor | None:
        name = stored(key)
        if name is not None:
            return source.read(name, dtype)
        owner, fused = key.rsplit(".", 1)
        if fused not in (GATE_UP, DOWN) or not any(owner.endswith(f".{p}") for p in spec.experts):
            return None
        n = getattr(model.get_submodule(owner), fused).shape[0]
        projs = ("gate_proj", "up_proj") if fused == GATE_UP else ("down_proj",)
        names = [[stored(f"{owner}.{e}.{projections.get(p, p)}.weight") for p in projs] for e in range(n)]
        if any(x is None for row in names for x in row):
            return None
        return torch.stack([torch.cat([source.read(x, dtype) for x in row]) for row in names])

    return read
