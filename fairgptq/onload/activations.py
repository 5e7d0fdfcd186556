"""Calibration activations between decoder layers: in memory up to a budget, memory-mapped files beyond.

After each layer the driver holds, per stream and batch, the hidden states entering the next
layer.  For long calibration sets on wide models these can outgrow memory, so the batches past
the budget are written to disk (``torch.save``) and read back memory-mapped (``mmap=True``):
the next layer pages them in as it reaches them and the kernel can drop those pages again.
The values are bit-for-bit those computed, so spilling never changes a code.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ..core.driver import StreamState


class ActivationStore:
    """Holds each layer's inputs within ``budget`` bytes of memory and spills the rest to ``folder``."""

    def __init__(self, budget: int | None, folder: str | Path | None = None) -> None:
        self.budget = budget  # None: no limit, nothing spilled
        self._root = Path(tempfile.mkdtemp(prefix="fairgptq-activations-", dir=folder))
        self._generation = 0
        self.spilled_bytes = 0  # most bytes on disk at once
        self.held_bytes = 0  # most bytes kept in memory at once

    def hold(self, states: dict[str, StreamState]) -> None:
        """Keep the first batches (stream by stream) in memory, spill the ones past the budget."""
        previous = self._root / str(self._generation)
        self._generation += 1
        folder = self._root / str(self._generation)
        in_memory = on_disk = 0
        for name, st in states.items():
            for i, h in enumerate(st.hidden):
                size = h.numel() * h.element_size()
                if self.budget is None or in_memory + size <= self.budget:
                    in_memory += size
                    continue
                folder.mkdir(exist_ok=True)
                path = folder / f"{name}-{i}.pt"
                torch.save(h.contiguous(), path)
                st.hidden[i] = torch.load(path, mmap=True, weights_only=True)
                on_disk += size
        self.held_bytes = max(self.held_bytes, in_memory)
        self.spilled_bytes = max(self.spilled_bytes, on_disk)
        shutil.rmtree(previous, ignore_errors=True)  # the inputs of the layer just done; open maps stay valid

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
