"""The standard GPTQ checkpoint: what transformers (optimum / GPTQModel), GPTQModel and vLLM load.

Per quantized linear ``<name>`` (weight W, out x in):

- ``<name>.qweight`` int32 (in * bits / 32, out): codes packed along the input axis;
- ``<name>.qzeros``  int32 (n_groups, out * bits / 32): integer zero points packed along the
  output axis, stored as ``zero - 1`` in the classic format (``checkpoint_format: gptq``, "v1",
  what AutoGPTQ wrote and every loader reads) or as ``zero`` in ``gptq_v2`` (GPTQModel only);
- ``<name>.scales``  float16 (n_groups, out);
- ``<name>.g_idx``   int32 (in,): group of every input column (act-order permutes it);
- ``<name>.bias`` kept as is; every other tensor (embeddings, norms, lm_head) saved normally;
- routed experts of a mixture-of-experts model (transformers 5 keeps them fused in 3-D
  ``gate_up_proj`` / ``down_proj`` tensors) as one GPTQ linear per expert and projection, the
  layout GPTQModel loads (:mod:`fairgptq.core.experts`): ``<experts>.<e>.gate_proj``,
  ``<experts>.<e>.up_proj`` and ``<experts>.<e>.down_proj``, and no fused tensor;
- outlier channels (backend ``outlier``), only where a module kept some:
  ``<name>.outlier_idx`` int32 (k,) ascending input columns and ``<name>.outlier_weight``
  float16 (out, k) their values.  The codes of those columns hold their group's zero point, so
  the packed part reads back as exactly 0 there and Weight = GPTQ part + the fp16 columns
  scattered in.  A plain GPTQ loader ignores the two extra tensors (it warns about unexpected
  keys) and so computes without the kept channels: load such a checkpoint with fairgptq
  (``load_gptq_checkpoint`` / ``fairgptq eval``), which adds them back.

Weight = scales[g_idx] * (code - zero), per input column.  v1 cannot store a zero point of 0
(it would underflow to 2^bits - 1), which only asymmetric grids produce; ``auto`` then picks
``gptq_v2`` and says so.  ``quantize_config.json`` (GPTQModel, vLLM) and the
``quantization_config`` entry of ``config.json`` (transformers) carry the settings;
``quantize_config.json`` also has a ``fairgptq`` section (under ``meta``, where consumers ignore
it quietly; read it with :func:`fairgptq_record`) with every fairness setting, the pair sets'
names and hashes, every stability event (spec section 7) and the true grouping when the stored
one differs (:mod:`fairgptq.export.regroup`).  ``config.json`` names the model class
(``architectures``) and the dtype the unquantized tensors are stored in.

Scales are float16 in this format, and pipelines and :func:`fairgptq.export_checkpoint` store the
unquantized tensors in float16 too (as GPTQModel writes them: SmolLM2-135M's export is half the
size of a float32 one); this module's own default keeps the model's dtype.
The engine keeps float32 scales and the model its own dtype, so the model is first snapped to
the checkpoint's precision (:func:`snap_to_checkpoint_precision`: scales, and unquantized tensors
rounded to the storage dtype in place): the evaluated model's weights are then bit-for-bit the
exported ones, and loading the checkpoint at the model's dtype gives identical logits.  Every file
is written readable by others (0644 under the usual umask), as a published model folder is.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from safetensors.torch import save_file

from ..version import __version__
from ..registry import arch_for
from ..core.driver import QuantizationResult
from ..core.experts import checkpoint_split, is_routed_expert, read_weight, routed_parts, write_weight
from ..core.gptq import QuantizedWeight
from .errors import ExportError
from .integrity import seal
from .model_card import model_card
from .packing import pack_last, unpack_last
from .regroup import regroup, stored_group_size

CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
WEIGHTS_FILE = "model.safetensors"
QUANTIZE_CONFIG = "quantize_config.json"
QUANTIZED_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")
OUTLIER_SUFFIXES = ("outlier_idx", "outlier_weight")
_FP16_MAX = float(torch.finfo(torch.float16).max)
#: what the unquantized tensors (embeddings, norms, biases) are stored in unless ``dtype`` says otherwise
STORAGE_DTYPE = torch.float16


def at_checkpoint_precision(qw: QuantizedWeight, module: str = "?") -> QuantizedWeight:
    """The same codes with float16-rounded scales: exactly what the checkpoint can hold."""
    s = qw.scales.float()
    if bool((s.abs() > _FP16_MAX).any()):
        raise ExportError(f"{module}: a scale exceeds the float16 range; the GPTQ format cannot store it")
    s16 = s.to(torch.float16)
    if bool(((s16 == 0) & (s != 0)).any()):
        raise ExportError(f"{module}: a scale underflows float16 (weights below ~1e-7 in a whole group); "
                          f"the GPTQ format cannot store it")
    return replace(qw, scales=s16.float())


def snap_to_checkpoint_precision(model: nn.Module, result: QuantizationResult,
                                 dtype: torch.dtype | None = None) -> None:
    """Round every scale to float16 and write the re-dequantized weights into ``model`` (in place).

    The change per weight is at most a 2^-11 relative step of its group's scale.  With ``dtype``
    (the export's storage dtype), every unquantized floating tensor is rounded to it too, keeping
    the model's own dtype.  Afterwards ``result.qweights`` and the model's weights are exactly what
    :func:`export_checkpoint` stores with that dtype.
    """
    skip = stored_elsewhere(model, result)
    spec = arch_for(model)
    for name, qw in list(result.qweights.items()):
        snapped = at_checkpoint_precision(qw, name)
        result.qweights[name] = snapped
        write_weight(model, spec, name, snapped.dequantize())
    if dtype is not None:
        with torch.no_grad():
            for key, t in model.state_dict(keep_vars=True).items():
                if key not in skip and t.is_floating_point() and t.dtype != dtype:
                    _check_storable(key, t, dtype)
                    t.data.copy_(t.data.to(dtype).to(t.dtype))


def stored_elsewhere(model: nn.Module, result: QuantizationResult) -> set[str]:
    """State-dict keys the checkpoint stores as GPTQ tensors: quantized weights and fully quantized fused experts.

    A fused experts tensor of which only some experts were quantized has no layout (the checkpoint
    would need float and GPTQ experts in one module): refused, naming it.
    """
    keys = {f"{n}.weight" for n in result.qweights if not is_routed_expert(n)}
    experts: dict[str, set[int]] = {}
    for n in result.qweights:
        if is_routed_expert(n):
            owner, fused, e = routed_parts(n)
            experts.setdefault(f"{owner}.{fused}", set()).add(e)
    for key, done in experts.items():
        owner, fused = key.rsplit(".", 1)
        n = getattr(model.get_submodule(owner), fused).shape[0]
        if done != set(range(n)):
            raise ExportError(f"{key}: only {len(done)} of its {n} experts were quantized; the per-expert GPTQ "
                              f"layout (<experts>.<e>.gate_proj / up_proj / down_proj) cannot mix float and "
                              f"quantized experts of one layer: quantize every expert or none")
        keys.add(key)
    return keys


def _check_storable(key: str, t: torch.Tensor, dtype: torch.dtype) -> None:
    """A tensor whose values overflow the storage dtype would be stored as inf: refuse, naming it."""
    limit = torch.finfo(dtype).max
    if t.numel() and float(t.detach().abs().max()) > limit:
        raise ExportError(f"{key}: a value exceeds the {str(dtype).removeprefix('torch.')} range ({limit:.3g}); "
                          f"store the unquantized tensors in the model's dtype (export dtype: model)")


def choose_format(qweights: Mapping[str, QuantizedWeight], requested: str = "auto") -> str:
    """``gptq`` (v1, widest support) unless a zero point of 0 forces ``gptq_v2``."""
    if requested not in ("auto", *CHECKPOINT_FORMATS):
        raise ExportError(f"checkpoint_format {requested!r}: use auto, gptq or gptq_v2")
    zero_at_0 = [n for n, qw in qweights.items() if bool((qw.zeros == 0).any())]
    if requested == "gptq" and zero_at_0:
        raise ExportError(f"{zero_at_0[0]} (and {len(zero_at_0) - 1} more) has a zero point of 0, which the v1 "
                          f"format stores as zero - 1 = -1 and cannot represent; use checkpoint_format: gptq_v2 "
                          f"or auto, or symmetric quantization")
    if requested == "auto":
        return "gptq_v2" if zero_at_0 else "gptq"
    return requested


def pack_weight(qw: QuantizedWeight, checkpoint_format: str = "gptq") -> dict[str, torch.Tensor]:
    """qweight / qzeros / scales / g_idx of one linear (see module docstring)."""
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ExportError(f"checkpoint_format {checkpoint_format!r}: use one of {CHECKPOINT_FORMATS}")
    zeros = qw.zeros.to(torch.int64) - (1 if checkpoint_format == "gptq" else 0)
    packed = {
        "qweight": pack_last(qw.codes.to(torch.int64), qw.bits).T.contiguous(),
        "qzeros": pack_last(zeros, qw.bits).contiguous(),
        "scales": qw.scales.to(torch.float16).contiguous(),
        "g_idx": qw.g_idx.to(torch.int32).contiguous(),
    }
    if qw.outlier_idx is not None and qw.outlier_idx.numel():
        packed["outlier_idx"] = qw.outlier_idx.to(torch.int32).contiguous()
        packed["outlier_weight"] = qw.outlier_weight.to(torch.float16).contiguous()
    return packed


def unpack_weight(tensors: Mapping[str, torch.Tensor], *, bits: int, group_size: int, sym: bool,
                  checkpoint_format: str = "gptq") -> QuantizedWeight:
    """Inverse of :func:`pack_weight`; scales come back as float32 holding the float16 values."""
    out = tensors["scales"].shape[1]
    codes = unpack_last(tensors["qweight"].T.contiguous(), bits)
    zeros = unpack_last(tensors["qzeros"], bits)[:, :out] + (1 if checkpoint_format == "gptq" else 0)
    has_outliers = "outlier_idx" in tensors
    return QuantizedWeight(codes=codes.to(torch.uint8), scales=tensors["scales"].float(), zeros=zeros.to(torch.int32),
                           g_idx=tensors["g_idx"].to(torch.int32), bits=bits, group_size=group_size, sym=sym,
                           outlier_idx=tensors["outlier_idx"].to(torch.int32) if has_outliers else None,
                           outlier_weight=tensors["outlier_weight"] if has_outliers else None)


def outlier_counts(qweights: Mapping[str, QuantizedWeight]) -> dict[str, int]:
    """Input channels kept in fp16, per module that kept any."""
    return {n: int(qw.outlier_idx.numel()) for n, qw in qweights.items()
            if qw.outlier_idx is not None and qw.outlier_idx.numel()}


def grouping_record(quantized: int, stored: int) -> dict:
    """What the ``fairgptq`` section says about groups: the true grouping and why another was stored."""
    record = {"quantized_group_size": quantized if quantized > 0 else -1, "stored_group_size": stored if stored > 0
              else -1, "lossless": True}
    if stored != quantized:
        record["reason"] = (f"group_size {quantized} leaves a partial last group in some quantized layers, which "
                            f"GPTQ consumers (transformers + optimum, GPTQModel, vLLM) refuse; each group of "
                            f"{quantized} is stored as {quantized // stored} groups of {stored} with the same scale "
                            f"and zero point, so the dequantized weights are bit-identical")
    return record


def quantize_config(result: QuantizationResult, checkpoint_format: str, fairgptq_meta: Mapping[str, Any],
                    group_size: int | None = None, outliers: Mapping[str, int] | None = None) -> dict:
    """quantize_config.json: the GPTQModel / AutoGPTQ keys plus the ``fairgptq`` section (under ``meta``).

    ``group_size`` is the stored group size (:func:`stored_group_size`); the quantized one
    stays in ``fairgptq.grouping``.  ``outliers`` (module -> kept channels) replaces the count
    from ``result.qweights`` when the weights were written and dropped layer by layer
    (fairgptq.onload).
    """
    c = result.config
    stored = c.group_size if group_size is None else group_size
    return {
        "bits": c.bits, "group_size": stored if stored > 0 else -1, "desc_act": c.act_order,
        "sym": c.sym, "static_groups": c.static_groups, "true_sequential": True, "damp_percent": c.damp,
        "lm_head": False, "quant_method": "gptq", "checkpoint_format": checkpoint_format,
        # GPTQModel reads `meta` and ignores the keys in it that it does not know, without the
        # "unknown parameter" message a top-level key gets; transformers and vLLM ignore it too.
        "meta": {"quantizer": [f"fairgptq:{__version__}"], "mse": c.mse, "block_size": c.block_size,
                 "act_group_aware": c.act_group_aware,
                 "fairgptq": {
                     "version": __version__, "grouping": grouping_record(c.group_size, stored),
                     "objectives": result.objectives,
                     "outlier_channels": {
                         "layout": "<name>.outlier_idx int32 (k,), <name>.outlier_weight float16 (out, k); "
                                   "weight = GPTQ part (0 at those columns) + these columns",
                         "modules": dict(outliers) if outliers is not None else outlier_counts(result.qweights)},
                     "modules": [r.to_dict() for r in result.reports], **fairgptq_meta}},
    }


def _consumer_config(qc: Mapping[str, Any]) -> dict:
    """config.json's ``quantization_config``: quantize_config without the (large) fairgptq record."""
    return {**qc, "meta": {k: v for k, v in qc["meta"].items() if k != "fairgptq"}}


def _plain_tensors(model: nn.Module, skip: set[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every state-dict tensor but those in ``skip`` (the quantized ones), floats in ``dtype``; tied copies once."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in model.state_dict().items():
        if key in skip:
            continue
        ptr = t.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        t = t.detach().cpu()
        if t.is_floating_point():
            _check_storable(key, t, dtype)
        out[key] = (t.to(dtype) if t.is_floating_point() else t).contiguous()
    return out


def _check_snapped(model: nn.Module, result: QuantizationResult) -> None:
    spec = arch_for(model)
    for name, qw in result.qweights.items():
        w = read_weight(model, spec, name)
        if not torch.equal(w.float().cpu(), at_checkpoint_precision(qw, name).dequantize()):
            raise ExportError(f"{name}: the model's weight is not the checkpoint's dequantized weight; call "
                              f"snap_to_checkpoint_precision(model, result) before exporting (and evaluating)")


def export_checkpoint(model: nn.Module, tokenizer, result: QuantizationResult, out_dir: str | Path, *,
                      checkpoint_format: str = "auto", fairgptq_meta: Mapping[str, Any] | None = None,
                      dtype: torch.dtype | None = None, model_name: str | None = None) -> dict:
    """Write the GPTQ checkpoint of a quantized ``model`` into ``out_dir``; returns quantize_config.

    Unquantized tensors (embeddings, norms, biases, an untied lm_head) are stored in ``dtype``
    (default: the model's own, so the reloaded model is exactly the evaluated one) and
    ``config.json`` names that dtype, which is what transformers and GPTQModel load them in.
    A group size that leaves partial groups is stored as its lossless equivalent
    (:mod:`fairgptq.export.regroup`); ``fairgptq.grouping`` in the returned config says so.
    ``dtype`` is the storage dtype of the unquantized tensors: the model's own by default here, so the
    checkpoint is exactly the model; pipelines and :func:`fairgptq.export_checkpoint` store float16
    (:data:`STORAGE_DTYPE`) after snapping the model to it.
    """
    skip = stored_elsewhere(model, result)
    _check_snapped(model, result)
    fmt = choose_format(result.qweights, checkpoint_format)
    group = stored_group_size(result.qweights, result.config.group_size)
    dtype = dtype or next(model.parameters()).dtype
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = _plain_tensors(model, skip, dtype)
    for name, qw in result.qweights.items():
        for stored, part in checkpoint_split(name, at_checkpoint_precision(qw, name)):
            for suffix, t in pack_weight(regroup(part, group, stored), fmt).items():
                tensors[f"{stored}.{suffix}"] = t
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    qc = quantize_config(result, fmt, dict(fairgptq_meta or {}), group)
    config = json.loads(model.config.to_json_string(use_diff=False))
    # Consumers pick the model class from `architectures`; a model built from a GGUF file or a
    # bare config has it unset.
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    config["dtype"] = str(dtype).removeprefix("torch.")
    config["quantization_config"] = _consumer_config(qc)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    seal(out, [WEIGHTS_FILE], qc, config)  # after the tokenizer: its files are sealed too
    (out / QUANTIZE_CONFIG).write_text(json.dumps(qc, indent=2, default=str) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    _write_card(out, qc, model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__)
    make_shareable(out)
    return qc


def _write_card(out: Path, qc: dict, model_name: str) -> None:
    """README.md: the Hub-ready card, here without evaluation (a pipeline rewrites it with its results)."""
    from ..model_loading import describe_source
    base_model, source_kind = describe_source(model_name)
    (out / "README.md").write_text(model_card(qc, model_name=Path(model_name).name or model_name,
                                              base_model=base_model, source_kind=source_kind), encoding="utf-8")


def make_shareable(folder: Path) -> None:
    """Every file in ``folder`` readable as the umask allows (0644 usually): safetensors writes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for f in Path(folder).iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)
