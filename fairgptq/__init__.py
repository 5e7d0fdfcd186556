"""fairgptq: GPTQ quantization with the Fair-GPTQ group-fairness term.

The engine's public API (stable names): :class:`QuantConfig`, :func:`quantize_weight`,
:class:`QuantizedWeight`, :func:`fair_update`; whole models with :func:`quantize_model`.
"""
from .core.driver import QuantizationResult, quantize_model
from .core.gptq import QuantizedWeight, fair_update, quantize_weight
from .core.quantizer import QuantConfig

__all__ = ["QuantConfig", "QuantizedWeight", "QuantizationResult", "fair_update", "quantize_model", "quantize_weight"]
__version__ = "0.1.0"
