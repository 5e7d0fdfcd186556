"""vLLM's rules for a GPTQ checkpoint, written down so a test can hold an export to them without vLLM.

vLLM cannot be installed here: its wheels are CUDA builds pinned to their own torch (the project
pins torch 2.13.0 CPU), and its GPTQ linear methods allocate their parameters on the GPU.  These
are the checks vLLM applies, each with the place in vLLM that applies it
(``vllm/model_executor/layers/quantization/``):

- ``gptq.py`` ``GPTQConfig.__init__``: ``bits`` in {2, 3, 4, 8}; ``pack_factor = Fraction(32, bits)``.
  ``GPTQConfig.from_config`` reads ``bits``, ``group_size``, ``desc_act`` (required) and ``lm_head``
  (optional) from ``quantize_config.json`` or config.json's ``quantization_config``.
- ``gptq.py`` ``GPTQLinearMethod.create_weights``: ``input_size_per_partition % group_size == 0``
  ("The input size is not aligned with the quantized weight shape") and
  ``output_size_per_partition % pack_factor.numerator == 0``; the parameters it allocates are
  ``qweight`` (in / pack_factor, out) int32, ``g_idx`` (in,) int32, ``qzeros``
  (in / group, out / pack_factor) int32 and ``scales`` (in / group, out), group = in when -1.
  With ``desc_act`` and a row-parallel split the ExLlama kernel is not used (``g_idx`` is then
  read as written).  Checked here for one GPU (no tensor parallelism: a shard is the whole layer).
- ``gptq_marlin.py`` / ``utils/marlin_utils.py`` (the kernel vLLM prefers on GPUs): only symmetric
  v1 types (4-bit ``uint4b8``, 8-bit ``uint8b128``), group sizes {-1, 32, 64, 128}; a layer whose
  ``in`` is not a multiple of 128 or whose ``out`` is not a multiple of 64 is handed to another
  WNA16 kernel (ExLlama), so those are reported, not refused.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import torch

VLLM_GPTQ_BITS = (2, 3, 4, 8)
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)
MARLIN_MIN_K, MARLIN_MIN_N = 128, 64


def check_config(qc: Mapping) -> list[str]:
    """Problems vLLM's ``GPTQConfig`` would raise on (empty when none)."""
    problems = [f"missing key {k!r}" for k in ("bits", "group_size", "desc_act") if k not in qc]
    if qc.get("quant_method", "gptq") != "gptq":
        problems.append(f"quant_method {qc.get('quant_method')!r} is not gptq")
    if qc.get("bits") not in VLLM_GPTQ_BITS:
        problems.append(f"bits {qc.get('bits')} not in {VLLM_GPTQ_BITS}")
    return problems


def check_linear(name: str, tensors: Mapping[str, torch.Tensor], qc: Mapping, in_features: int,
                 out_features: int) -> list[str]:
    """Problems ``GPTQLinearMethod.create_weights`` and the weight loader would raise for one layer."""
    bits, group = qc["bits"], qc["group_size"]
    pack = Fraction(32, bits)
    problems = []
    in_part = in_features  # one GPU: the partition is the whole layer
    g = in_features if group == -1 else group
    if in_part % g:
        problems.append(f"{name}: input size per partition {in_part} % group_size {g} != 0")
    if out_features % pack.numerator:
        problems.append(f"{name}: output size {out_features} % pack factor numerator {pack.numerator} != 0")
    expected = {"qweight": (int(in_features / pack), out_features), "g_idx": (in_features,),
                "qzeros": (in_features // g, int(out_features / pack)), "scales": (in_features // g, out_features)}
    for suffix, shape in expected.items():
        t = tensors.get(f"{name}.{suffix}")
        if t is None:
            problems.append(f"{name}.{suffix} missing")
        elif tuple(t.shape) != shape:
            problems.append(f"{name}.{suffix} has shape {tuple(t.shape)}, vLLM allocates {shape}")
        elif suffix != "scales" and t.dtype != torch.int32:
            problems.append(f"{name}.{suffix} is {t.dtype}, vLLM allocates int32")
    return problems


def marlin_notes(name: str, qc: Mapping, in_features: int, out_features: int) -> list[str]:
    """Why vLLM's Marlin kernel would pass this layer to another kernel (informational)."""
    notes = []
    if not qc.get("sym", True) or qc["bits"] not in (4, 8):
        notes.append(f"{name}: Marlin needs symmetric 4- or 8-bit")
    if qc["group_size"] not in MARLIN_GROUP_SIZES:
        notes.append(f"{name}: Marlin group sizes are {MARLIN_GROUP_SIZES}")
    if in_features % MARLIN_MIN_K or out_features % MARLIN_MIN_N:
        notes.append(f"{name}: Marlin needs in % {MARLIN_MIN_K} == 0 and out % {MARLIN_MIN_N} == 0")
    return notes
