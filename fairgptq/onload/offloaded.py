"""Evaluating a model larger than memory: accelerate's disk-offloaded inference over a GPTQ checkpoint.

fairgptq evaluates GPTQ checkpoints as float models (the codes multiplied out once, see
fairgptq.export.loader).  For a model that does not fit in memory, each decoder layer's weights
are dequantized into accelerate's offload folder (one memory-mapped file per tensor) and the
model is dispatched with ``device_map`` {decoder layers: "disk", the rest: "cpu"}: accelerate's
hooks read a layer's weights from the folder just before its forward and drop them after.  The
results equal the in-memory evaluation's; only time grows (every forward reads every layer).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..registry import arch_for
from ..core.experts import per_expert_modules
from ..model_loading import MODEL_DTYPES
from ..export.gptq_format import OUTLIER_SUFFIXES, QUANTIZED_SUFFIXES, unpack_weight
from ..export.loader import read_quantize_config
from .quantize import _set_tensor, empty_model, saved_keys
from .source import SafetensorsSource


def _device_map(model: nn.Module, layers_path: str, n_layers: int) -> dict[str, str]:
    """Decoder layers on "disk"; every module beside the path to them (embeddings, norm, head) on "cpu"."""
    device_map = {f"{layers_path}.{i}": "disk" for i in range(n_layers)}
    parts = layers_path.split(".")
    for depth in range(len(parts)):
        parent = model.get_submodule(".".join(parts[:depth]))
        for name, _ in parent.named_children():
            if name != parts[depth]:
                device_map[".".join([*parts[:depth], name])] = "cpu"
    return device_map


def load_offloaded(path: str | Path, offload_dir: str | Path, *, dtype: str | None = None):
    """(model, tokenizer, quantize_config) with decoder layers offloaded to ``offload_dir`` (created)."""
    from accelerate import dispatch_model
    from accelerate.utils import offload_weight, save_offload_index
    from transformers import AutoConfig, AutoTokenizer

    path, offload_dir = Path(path), Path(offload_dir)
    qc = read_quantize_config(path)
    fmt = qc.get("checkpoint_format", "gptq")
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # dequantized here; transformers would want a GPTQ kernel
    torch_dtype = MODEL_DTYPES[dtype] if dtype else torch.float32
    model = empty_model(config, torch_dtype)
    spec = arch_for(model)
    source = SafetensorsSource(path)
    quantized = {k.removesuffix(".qweight") for k in source.names() if k.endswith(".qweight")}
    prefix = spec.layers + "."
    index: dict = {}
    offload_dir.mkdir(parents=True, exist_ok=True)

    def dequantized(module: str) -> torch.Tensor:
        parts = {s: source.read(f"{module}.{s}") for s in (*QUANTIZED_SUFFIXES, *OUTLIER_SUFFIXES)
                 if f"{module}.{s}" in source}
        return unpack_weight(parts, bits=qc["bits"], group_size=qc["group_size"], sym=qc["sym"],
                             checkpoint_format=fmt).dequantize()

    for key in saved_keys(model):
        module = key.removesuffix(".weight")
        experts = per_expert_modules(model, key)
        if module in quantized and key.endswith(".weight"):
            value = spec.stored(dequantized(module)).to(torch_dtype)
        elif experts and all(m in quantized for row in experts for m in row):  # a fused tensor stored per expert
            value = torch.stack([torch.cat([dequantized(m) for m in row]) for row in experts]).to(torch_dtype)
        else:
            value = source.read(key, torch_dtype)
        if key.startswith(prefix):
            index = offload_weight(value, key, str(offload_dir), index=index)
        else:
            _set_tensor(model, key, value)
    save_offload_index(index, str(offload_dir))
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    n_layers = len(model.get_submodule(spec.layers))
    model = dispatch_model(model, device_map=_device_map(model, spec.layers, n_layers), offload_dir=str(offload_dir))
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok, qc


def load_float_offloaded(folder: str | Path, offload_dir: str | Path, *, dtype: str = "float32"):
    """(model, tokenizer) of a float safetensors checkpoint with its decoder layers offloaded to ``offload_dir``.

    For the float baseline of a model that does not fit in memory: accelerate copies each layer's
    tensors into the offload folder and reads them back during the forward.
    """
    from accelerate import load_checkpoint_and_dispatch
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    model = empty_model(config, MODEL_DTYPES[dtype])
    spec = arch_for(model)
    n_layers = len(model.get_submodule(spec.layers))
    model = load_checkpoint_and_dispatch(model, str(folder), device_map=_device_map(model, spec.layers, n_layers),
                                         offload_folder=str(offload_dir), dtype=MODEL_DTYPES[dtype])
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok
