"""fairgptq: GPTQ quantization with bias-reducing objectives (Fair-GPTQ and its likelihood-directed term).

The engine's maths: :class:`QuantConfig`, :func:`quantize_weight`, :class:`QuantizedWeight`,
:func:`fair_update`.  Whole models (fairgptq.api): :func:`load_model`, :func:`quantize_model` with
objectives (:class:`FairPairObjective`, :class:`LikelihoodPairObjective`), :func:`load_pairs`,
:func:`calibration_windows` or :func:`text_batches` (your own strings or a ``datasets.Dataset``, as
:class:`TokenBatch` lists), :func:`export_checkpoint`, :func:`load_gptq_checkpoint` (a
:class:`LoadedCheckpoint`: model, tokenizer, config), :func:`evaluate`.
Names that import transformers load on first use, so ``import fairgptq`` stays light.
"""
from importlib import import_module
from typing import Any

from .api import export_checkpoint, load_pairs, quantize_model, text_batches
from .core.driver import QuantizationResult
from .core.objective import TokenBatch
from .core.gptq import QuantizedWeight, fair_update, quantize_weight
from .core.quantizer import QuantConfig
from .version import __version__

_LAZY = {"load_model": "fairgptq.model_loading", "FairPairObjective": "fairgptq.objectives.fair_pairs",
         "LikelihoodPairObjective": "fairgptq.objectives.likelihood_pairs",
         "calibration_windows": "fairgptq.datasets_adapters.wikitext", "load_gptq_checkpoint": "fairgptq.export.loader",
         "LoadedCheckpoint": "fairgptq.export.loader",
         "evaluate": "fairgptq.evaluation.suite"}

__all__ = ["QuantConfig", "QuantizedWeight", "QuantizationResult", "fair_update", "quantize_model", "quantize_weight",
           "export_checkpoint", "load_pairs", "text_batches", "TokenBatch", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fairgptq' has no attribute {name!r}")
