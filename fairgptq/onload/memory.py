"""Memory sizes ("8GiB") and the choice between the in-memory and the onloading path.

``onload: auto`` compares what the whole model would take in memory (its parameters in the
compute dtype, from the checkpoint's headers) with the smaller of ``max_memory`` and the memory
free now, and says which path it took and why; ``never`` refuses a model that does not fit
``max_memory`` instead of letting the machine swap or the kernel kill the run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import psutil
import torch

from ..core.errors import ConfigError
from ..model_loading import resolve_model
from .source import SafetensorsSource

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
ONLOAD_MODES = ("auto", "always", "never")
# room for what the in-memory path holds besides the weights (activations, Hessians, factorisations)
_IN_MEMORY_HEADROOM = 1.2


def parse_size(text: str | int) -> int:
    """Bytes in ``"8GiB"``, ``"512MB"``, ``"4e9"`` or an integer."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS:
        raise ConfigError(f"memory size {text!r}: write a number with a unit, e.g. 8GiB, 512MiB or 4GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def gib(n: int | float) -> str:
    return f"{n / 2**30:.2f} GiB"


@dataclass(frozen=True)
class OnloadDecision:
    """Which path quantizes the model, and the figures behind the choice (said in the log and report)."""

    onload: bool
    reason: str
    model_bytes: int | None = None
    limit_bytes: int | None = None

    def to_dict(self) -> dict:
        return {"onload": self.onload, "reason": self.reason, "model_bytes": self.model_bytes,
                "limit_bytes": self.limit_bytes}


def in_memory_bytes(source: SafetensorsSource, dtype: torch.dtype) -> int:
    """Bytes of every parameter in ``dtype`` (bf16 shards become twice their size in float32)."""
    return source.total_numel() * torch.empty((), dtype=dtype).element_size()


def safetensors_folder(name: str) -> SafetensorsSource | None:
    """The model's safetensors checkpoint when it is a local folder, else None (GGUF, hub id)."""
    src = resolve_model(name)
    if src.gguf_file or src.hub_id:
        return None
    try:
        return SafetensorsSource(src.folder)
    except ConfigError:
        return None


def choose_onload(name: str, mode: str, max_memory: str | int | None, dtype: torch.dtype) -> OnloadDecision:
    """Decide the path for model ``name`` under ``mode`` (auto / always / never); raise when it cannot work."""
    if mode not in ONLOAD_MODES:
        raise ConfigError(f"model.onload {mode!r}: use one of {ONLOAD_MODES}")
    limit = parse_size(max_memory) if max_memory is not None else None
    source = safetensors_folder(name)
    if source is None:
        if mode == "always":
            raise ConfigError(f"model.onload: always needs a local folder of safetensors shards; {name!r} is a GGUF "
                              f"file or a hub id. Save it first (model.save_pretrained(folder)) and name the folder")
        return OnloadDecision(False, f"{name!r} is not a local safetensors folder, so it is loaded whole")
    need = in_memory_bytes(source, dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    if mode == "always":
        return OnloadDecision(True, "model.onload: always", need, limit)
    available = psutil.virtual_memory().available
    budget = min(limit, available) if limit is not None else available
    which = "max_memory" if limit is not None and limit <= available else "the memory free now"
    fits = need * _IN_MEMORY_HEADROOM <= budget
    if mode == "never":
        if limit is not None and not fits:
            raise ConfigError(
                f"the model's weights take {gib(need)} in {dtype_name} (plus ~20 % working memory), more than "
                f"max_memory {gib(limit)}; the in-memory path refuses. Set model.onload: auto (or always) to "
                f"quantize it one decoder layer at a time from its safetensors shards")
        return OnloadDecision(False, "model.onload: never", need, limit)
    if fits:
        return OnloadDecision(False, f"onload auto: in memory, since the weights ({gib(need)} in {dtype_name}, "
                                     f"+20 % working memory) fit {which} ({gib(budget)})", need, budget)
    return OnloadDecision(True, f"onload auto: sequential onloading, since the weights ({gib(need)} in {dtype_name}, "
                                f"+20 % working memory) exceed {which} ({gib(budget)})", need, budget)
