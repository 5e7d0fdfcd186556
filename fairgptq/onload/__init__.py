"""Quantizing models whose weights do not fit in memory: one decoder layer at a time from disk.

:func:`quantize_onloaded` builds the model on the meta device, computes the first layer's
inputs, then reads each decoder layer from the checkpoint's safetensors shards when its turn
comes, quantizes it with the same per-layer step as the in-memory driver, writes its GPTQ
tensors to the output checkpoint and frees it.  :func:`choose_onload` decides between the two
paths; :func:`load_offloaded` evaluates such a checkpoint through accelerate's disk offload.
"""
from .memory import OnloadDecision, choose_onload, parse_size
from .offloaded import load_float_offloaded, load_offloaded
from .quantize import OnloadResult, quantize_onloaded

__all__ = ["OnloadDecision", "OnloadResult", "choose_onload", "load_float_offloaded", "load_offloaded", "parse_size",
           "quantize_onloaded"]
