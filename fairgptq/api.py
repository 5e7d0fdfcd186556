"""The whole-model API in one import: load, quantize (with objectives), export, reload, evaluate.

    from fairgptq import load_model, quantize_model, LikelihoodPairObjective, calibration_windows, load_pairs
    model, tok = load_model("smollm2")
    objective = LikelihoodPairObjective(load_pairs("stereoset", split="calibration", n=256), target=1.0, metric="identity")
    result = quantize_model(model, calibration_windows(tok, n=64), QuantConfig(bits=4), objectives=[objective], tokenizer=tok)
    export_checkpoint(model, tok, result, "out/model")        # then load_gptq_checkpoint("out/model"), evaluate(...)

:func:`quantize_model` here is the core driver's with the registry's model families (plugins'
included); :func:`export_checkpoint` snaps the scales to the checkpoint's float16 first, so what
is written is exactly the model in memory afterwards.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from .core import driver
from .core.backend import Backend
from .core.objective import Objective, TokenBatch
from .core.quantizer import QuantConfig
from .registry import Registry, default_registry


def quantize_model(model: nn.Module, calibration: list[TokenBatch] | None, config: QuantConfig, *,
                   objectives: Iterable[Objective] = (), tokenizer=None, roles: Iterable[str] | None = None,
                   progress: bool = True, backend: Backend | None = None,
                   registry: Registry | None = None) -> driver.QuantizationResult:
    """:func:`fairgptq.core.driver.quantize_model` on the families ``registry`` knows (default: the process-wide one)."""
    return driver.quantize_model(model, calibration, config, objectives=objectives, tokenizer=tokenizer, roles=roles,
                                 progress=progress, backend=backend,
                                 architectures=(registry or default_registry()).architectures())


def export_checkpoint(model: nn.Module, tokenizer, result: driver.QuantizationResult, out_dir: str | Path, *,
                      dtype: torch.dtype | None = None, **options: Any) -> dict:
    """Snap ``model`` and ``result`` to the checkpoint's precision, then write the GPTQ checkpoint; returns its config.

    Scales go to float16 and the unquantized tensors to the storage ``dtype`` (default float16), in
    place, so the model in memory is afterwards exactly the one on disk.  ``options`` go to
    :func:`fairgptq.export.export_checkpoint` (``checkpoint_format``, ``fairgptq_meta``).
    """
    from .export import export_checkpoint as write, snap_to_checkpoint_precision
    from .export.gptq_format import STORAGE_DTYPE
    dtype = dtype or STORAGE_DTYPE
    snap_to_checkpoint_precision(model, result, dtype)
    return write(model, tokenizer, result, out_dir, dtype=dtype, **options)


def load_pairs(source: str = "stereoset", *, split: str = "all", n: int | None = None, seed: int = 0,
               holdout_fraction: float = 0.5, registry: Registry | None = None, **params: Any) -> list:
    """A pair set as a pipeline builds one: a pair-source plugin's pairs, a split, a deterministic sample."""
    from .datasets_adapters.sampling import pair_subset
    loaded = (registry or default_registry()).create("pair_sources", source, **params)
    return list(pair_subset(loaded, split, holdout_fraction, n, seed))
