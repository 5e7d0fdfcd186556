"""Lossless re-grouping: a layout every GPTQ consumer accepts when the group size does not divide a width.

GPTQ loaders assume whole groups.  transformers + optimum refuse ``in_features % group_size != 0``
while loading, GPTQModel's CPU kernels fail on the first forward (``K to be divisible by
qGroupSize``) and vLLM's GPTQ linear method refuses ``input_size_per_partition % group_size``.
SmolLM2-135M (576-wide layers) quantized with group 128 has a partial last group of 64 columns.

Any group can be split into sub-groups that repeat its scale and zero point: the dequantized
weights are then bit-identical.  The stored group size is the largest one dividing every
quantized input width *and* the requested group size (their gcd; 64 for SmolLM2 with 128), so
every stored group lies inside one true group.  The true grouping stays in the ``fairgptq``
section of ``quantize_config.json``.  With act-order (``g_idx`` a permutation of groups) the
columns of each true group are split in column order; kernels read ``g_idx`` and do not care.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable, Mapping

import torch

from ..core.gptq import QuantizedWeight
from .errors import ExportError

#: The smallest group size GPTQ kernels accept (GPTQModel's torch / torch_fused kernels: 16;
#: vLLM's Marlin: 32).  A finer regrouping would be lossless yet load nowhere.
MIN_CONSUMER_GROUP = 16


def stored_group_size(qweights: Mapping[str, QuantizedWeight], group_size: int) -> int:
    """The group size to write: ``group_size`` itself when it divides every quantized width, else the gcd.

    Raises :class:`ExportError` when the only lossless layout has groups smaller than any
    GPTQ kernel accepts, naming the widths and the group sizes that would work.
    """
    return group_size_for_widths({int(qw.codes.shape[1]) for qw in qweights.values()}, group_size)


def group_size_for_widths(input_widths: Iterable[int], group_size: int) -> int:
    """:func:`stored_group_size` from the quantized modules' input widths alone (known before quantizing)."""
    if group_size <= 0:
        return group_size
    widths = sorted(set(input_widths))
    if all(w % group_size == 0 for w in widths):
        return group_size
    g = math.gcd(group_size, *widths)
    if g < MIN_CONSUMER_GROUP:
        common = math.gcd(*widths)
        fits = [s for s in (32, 64, 128, 256) if common % s == 0]
        raise ExportError(
            f"group_size {group_size} does not divide the quantized input widths {widths}, and the lossless "
            f"equivalent (groups of {g}, repeating each group's scale) is finer than any GPTQ kernel accepts "
            f"(minimum {MIN_CONSUMER_GROUP}); quantize with a group size that divides every width"
            + (f" (e.g. {', '.join(map(str, fits))})" if fits else " or group_size: -1 (one group per row)"))
    return g


def regroup(qw: QuantizedWeight, group: int, module: str = "?") -> QuantizedWeight:
    """The same weight with ``group``-column groups; dequantizes bit-identically to ``qw``."""
    if qw.group_size <= 0 or group == qw.group_size:
        return qw
    g_idx = qw.g_idx.long()
    n_groups = qw.scales.shape[0]
    counts = torch.bincount(g_idx, minlength=n_groups)
    if bool((counts % group).any()):
        raise ExportError(f"{module}: a group of {qw.group_size} columns cannot be split into groups of {group}")
    sub = counts // group                                   # stored groups per true group
    first = torch.cumsum(sub, 0) - sub                      # index of each true group's first stored group
    order = torch.argsort(g_idx * g_idx.numel() + torch.arange(g_idx.numel()))  # by group, then column
    rank = torch.empty_like(g_idx)
    rank[order] = torch.arange(g_idx.numel()) - (torch.cumsum(counts, 0) - counts)[g_idx[order]]
    new_g_idx = first[g_idx] + rank // group
    parent = torch.repeat_interleave(torch.arange(n_groups), sub)
    return replace(qw, g_idx=new_g_idx.to(torch.int32), scales=qw.scales[parent].clone(),
                   zeros=qw.zeros[parent].clone(), group_size=group)
