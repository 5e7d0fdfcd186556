"""Loading a GPTQ checkpoint back on CPU, every quantized linear dequantized into a plain weight.

fairgptq evaluates exported models without a GPTQ kernel package: the packed codes are
unpacked and multiplied out once, so the model runs as an ordinary float model whose
weights are exactly the checkpoint's (and, for a model exported by fairgptq, exactly the
in-memory quantized model's).  A mixture-of-experts checkpoint stores each routed expert's
projections as their own GPTQ linears (``<experts>.<e>.gate_proj`` ...: GPTQModel's layout); each is
dequantized into its rows of transformers' fused 3-D expert tensor (:func:`fairgptq.core.experts.checkpoint_slot`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from safetensors.torch import load_file

from ..core.architectures import ArchSpec
from ..core.experts import checkpoint_slot
from ..registry import arch_for
from ..core.errors import ConfigError, FairGPTQError, UnsupportedArchitectureError
from ..model_loading import MODEL_DTYPES
from .gptq_format import (CHECKPOINT_FORMATS, OUTLIER_SUFFIXES, QUANTIZE_CONFIG, QUANTIZED_SUFFIXES, WEIGHTS_FILE,
                          ExportError, unpack_weight)
from .integrity import (TOKENIZER_FILES, CheckpointIntegrityError, check_plain_tensors, check_quantized_tensors,
                        verify_files)


SHARD_INDEX = "model.safetensors.index.json"
logger = logging.getLogger("fairgptq.export")


class LoadedCheckpoint(NamedTuple):
    """A reloaded checkpoint by name (``.model``, ``.tokenizer``, ``.config``: its quantize_config.json).

    A named tuple, so code written for the three values (``model, tok, qc = load_gptq_checkpoint(...)``)
    keeps working, while ``model, tok = ...`` fails loudly instead of binding the wrong things.
    """

    model: nn.Module
    tokenizer: Any
    config: dict


def is_gptq_checkpoint(path: str | Path) -> bool:
    """A folder with a GPTQ config: quantize_config.json, or config.json's GPTQ quantization_config.

    Its tensors are not required here, so a checkpoint that lost them is loaded by :func:`load_gptq_checkpoint`,
    which says they are missing, rather than passed to transformers as a float model without weights."""
    p = Path(path)
    return p.is_dir() and ((p / QUANTIZE_CONFIG).is_file() or _embedded_config(p) is not None)


def _embedded_config(p: Path) -> dict | None:
    """config.json's GPTQ quantization_config (transformers' copy), when it has one."""
    try:
        qc = json.loads((p / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return None
    return qc if isinstance(qc, dict) and qc.get("quant_method") == "gptq" else None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors``, or of the shards a ``model.safetensors.index.json`` lists
    (what sequential onloading writes, fairgptq.onload)."""
    if not (path / SHARD_INDEX).is_file():
        if not (path / WEIGHTS_FILE).is_file():
            raise CheckpointIntegrityError(f"{path}: no {WEIGHTS_FILE} (nor {SHARD_INDEX}); the checkpoint has lost "
                                           f"its weights")
        return load_file(str(path / WEIGHTS_FILE))
    shards = sorted(set(json.loads((path / SHARD_INDEX).read_text())["weight_map"].values()))
    return {k: v for shard in shards for k, v in load_file(str(path / shard)).items()}


def read_quantize_config(path: str | Path) -> dict:
    """quantize_config.json, or (a checkpoint that lost it) config.json's quantization_config."""
    p = Path(path) / QUANTIZE_CONFIG
    if not p.is_file() and _embedded_config(Path(path)) is not None:
        return _embedded_config(Path(path))
    try:
        qc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{p}: not a readable quantize_config.json ({e})") from e
    if qc.get("quant_method", "gptq") != "gptq" or qc.get("checkpoint_format", "gptq") not in CHECKPOINT_FORMATS:
        raise ExportError(f"{p}: quant_method {qc.get('quant_method')!r} / checkpoint_format "
                          f"{qc.get('checkpoint_format')!r} is not a GPTQ checkpoint fairgptq can read")
    return qc


def _weight_layout(model: nn.Module) -> ArchSpec:
    """The family's entry, which knows how its modules store weights (GPT-2's Conv1D: transposed).

    A GPTQ checkpoint of a family fairgptq does not quantize (written by another tool) is read in
    ``nn.Linear``'s (out, in) layout; the shape check in :func:`load_gptq_checkpoint` refuses a mismatch.
    """
    try:
        return arch_for(model)
    except UnsupportedArchitectureError:
        return ArchSpec(layers="", roles={})


def load_gptq_checkpoint(path: str | Path, *, dtype: str | None = None, device: str = "cpu",
                         trust_unverified: bool = False) -> LoadedCheckpoint:
    """The model, tokenizer and quantize config of an exported GPTQ checkpoint folder (a :class:`LoadedCheckpoint`).

    The content hashes fairgptq recorded at export are checked first (tensors, configs, tokenizer and chat
    template: :mod:`.integrity`); ``trust_unverified=True`` (``--trust-unverified``) loads a checkpoint that
    fails that check or whose record is gone, on the user's word.  ``dtype`` is the compute dtype: by default
    float32 on the CPU, whatever the tensors are stored in (exports store float16, which a CPU computes
    several times slower and less exactly), and the stored dtype on an accelerator.

    >>> from fairgptq import QuantConfig, export_checkpoint, load_gptq_checkpoint, load_model, quantize_model, text_batches
    >>> model, tok = load_model(MODEL)
    >>> result = quantize_model(model, text_batches(tok, ["the nurse was kind"] * 4), QuantConfig(group_size=32),
    ...                         progress=False)
    >>> _ = export_checkpoint(model, tok, result, f"{OUT}/model")
    >>> checkpoint = load_gptq_checkpoint(f"{OUT}/model")
    >>> checkpoint.config["bits"], type(checkpoint.model).__name__
    (4, 'LlamaForCausalLM')
    >>> model, tok, config = checkpoint          # also unpacks as three values
    """
    path = Path(path)
    if dtype is not None and dtype not in MODEL_DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {', '.join(MODEL_DTYPES)}")
    qc = read_quantize_config(path)
    if trust_unverified:
        logger.warning("%s: loaded without checking its integrity record (trust_unverified / --trust-unverified)",
                       path)
    else:
        verify_files(path, qc)
    tok = _tokenizer(path)
    try:
        model = _build(path, qc, dtype, device)
    except FairGPTQError:
        raise
    except Exception as e:  # the files do not describe a model transformers can build: say which folder, and why
        raise ExportError(f"{path}: not a loadable checkpoint: its config.json or tensors do not fit together "
                          f"({type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''})"
                          ) from None
    return LoadedCheckpoint(model, tok, qc)


def _tokenizer(path: Path):
    """The checkpoint's tokenizer, or an error that says the tokenizer (not the tensors) is what is missing."""
    from transformers import AutoTokenizer
    if not any((path / name).is_file() for name in TOKENIZER_FILES if name != "generation_config.json"):
        raise ExportError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json / vocab files); copy "
                          f"the base model's tokenizer into the folder (tokenizer.save_pretrained({str(path)!r}))")
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # a damaged tokenizer file: name it, not the weights
        raise ExportError(f"{path}: its tokenizer files do not load ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}); copy the base model's "
                          f"tokenizer into the folder") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def compute_dtype(dtype: str | None, device: str, stored: object = None) -> torch.dtype:
    """The dtype a model is built in: the user's, else float32 on the CPU, else the stored one (float32 if none)."""
    if dtype is not None:
        return MODEL_DTYPES[dtype]
    if torch.device(device).type == "cpu":
        return torch.float32
    if isinstance(stored, str):
        return MODEL_DTYPES.get(stored, torch.float32)
    return stored if isinstance(stored, torch.dtype) else torch.float32


def _build(path: Path, qc: dict, dtype: str | None, device: str):
    """The model of a verified (or unverified, by request) GPTQ folder, every quantized linear dequantized."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fmt = qc.get("checkpoint_format", "gptq")
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # we dequantize ourselves; transformers would want a GPTQ kernel
    model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype(dtype, device, getattr(config, "dtype", None)))
    try:
        tensors = _load_tensors(path)
    except CheckpointIntegrityError:
        raise
    except Exception as e:  # safetensors raises its own error type for truncated or garbage files
        raise CheckpointIntegrityError(f"{path}: not a readable safetensors file ({e})") from e
    prefixes = sorted(k[: -len(".qweight")] for k in tensors if k.endswith(".qweight"))
    layout = _weight_layout(model)
    quantized: set[str] = set()
    fused_rows: dict[str, int] = {}  # fused expert tensor -> rows written from per-expert modules
    for name in prefixes:
        parts = {s: tensors.pop(f"{name}.{s}") for s in (*QUANTIZED_SUFFIXES, *OUTLIER_SUFFIXES)
                 if f"{name}.{s}" in tensors}
        check_quantized_tensors(name, parts, qc["bits"])
        qw = unpack_weight(parts,
                           bits=qc["bits"], group_size=qc["group_size"], sym=qc["sym"], checkpoint_format=fmt)
        W = qw.dequantize()
        slot = checkpoint_slot(model, name)
        if slot is not None:  # a routed expert's projection: its rows of the fused tensor
            key, target = slot
            _check_shape(path, name, W, tuple(target.shape))
            target.copy_(W.to(target.dtype))
            fused_rows[key] = fused_rows.get(key, 0) + target.shape[0]
            continue
        module = model.get_submodule(name)
        _check_shape(path, name, W, tuple(layout.weight_of(module).shape))
        layout.set_weight(module, W)
        quantized.add(f"{name}.weight")
    for key, rows in fused_rows.items():
        param = model.get_parameter(key)
        if rows != param.shape[0] * param.shape[1]:
            raise ExportError(f"{path}: {key} has {rows} of its {param.shape[0] * param.shape[1]} rows in per-expert "
                              f"GPTQ modules (<experts>.<e>.gate_proj / up_proj / down_proj); some experts are "
                              f"missing from the checkpoint")
        quantized.add(key)
    check_plain_tensors(tensors)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k not in quantized]
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
        missing = [k for k in missing if not k.startswith("lm_head.")]
    if missing or unexpected:
        raise ExportError(f"{path}: checkpoint does not match the {config.model_type} architecture "
                          f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(device)
    model.eval()
    return model


def _check_shape(path: Path, name: str, W: torch.Tensor, expected: tuple[int, ...]) -> None:
    if expected != tuple(W.shape):
        raise ExportError(f"{path}: {name} unpacks to {tuple(W.shape)} (out, in), the model expects {expected}")
