"""Reading a model's safetensors checkpoint one tensor at a time (memory-mapped, never whole).

A folder holds ``model.safetensors`` or shards listed in ``model.safetensors.index.json``;
``safe_open`` maps a shard and copies out only the tensors asked for, so the process never
holds more of the checkpoint than the layer being quantized.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from ..core.errors import ConfigError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class SafetensorsSource:
    """Tensor name -> shard of a checkpoint folder, and reads of single tensors in a chosen dtype."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if (self.folder / INDEX).is_file():
            weight_map = json.loads((self.folder / INDEX).read_text())["weight_map"]
            self.files = {name: self.folder / shard for name, shard in weight_map.items()}
        elif (self.folder / SINGLE).is_file():
            with safe_open(str(self.folder / SINGLE), framework="pt") as f:
                self.files = {name: self.folder / SINGLE for name in f.keys()}
        else:
            raise ConfigError(
                f"{self.folder}: sequential onloading reads safetensors checkpoints ({SINGLE} or {INDEX}) and "
                f"this folder has neither; save the model as safetensors first "
                f"(model.save_pretrained(folder, safe_serialization=True)), or set model.onload: never")

    def names(self) -> list[str]:
        return list(self.files)

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, converted to ``dtype`` (the model's compute precision) when given."""
        with safe_open(str(self.files[name]), framework="pt") as f:
            t = f.get_tensor(name)
        return t if dtype is None or not t.is_floating_point() else t.to(dtype)

    def total_numel(self) -> int:
        """Number of values in the whole checkpoint, read from the shards' headers only."""
        by_file: dict[Path, list[str]] = {}
        for name, path in self.files.items():
            by_file.setdefault(path, []).append(name)
        total = 0
        for path, names in by_file.items():
            with safe_open(str(path), framework="pt") as f:
                for name in names:
                    total += math.prod(f.get_slice(name).get_shape())
        return total
