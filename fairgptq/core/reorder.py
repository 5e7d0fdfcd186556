"""The column orders of GPTQ's loop: act-order and group-aware reordering (GAR).

GPTQ quantizes columns one at a time and feeds each rounding error into the columns still to
do, so columns quantized early have their error absorbed by many; the ones quantized last by
few.  Putting the columns with the largest diag H (the most input energy: their error costs
the most) first helps (act-order, Frantar et al. 2023).  With groups, a full sort scatters a
group's columns over the loop: either the group grids follow the loop (``g_idx`` becomes a
permutation of groups, slow kernels) or they are fixed beforehand (static groups).

GAR (Gafni, Karnieli, Hanani, "Dual Precision Quantization for Efficient and Accurate Deep
Neural Networks Inference", CVPRW 2025, arXiv 2505.14638; GPTQModel's ``act_group_aware``)
sorts in two levels instead: the columns of each group by descending diag H, then the groups
by their largest diag H, so a group's columns stay together in the loop and in the checkpoint
(``g_idx[c] = c // g``).  A partial last group keeps its place at the end in natural order, as
GPTQModel does; with one group per row (group_size -1) GAR is act-order.
"""
from __future__ import annotations

import torch


def act_order(diag: torch.Tensor) -> torch.Tensor:
    """Loop order of act-order: every column by descending diag H."""
    return torch.argsort(diag, descending=True)


def group_aware_order(diag: torch.Tensor, group_size: int) -> torch.Tensor:
    """Loop order of GAR: perm[j] is the column quantized j-th (int64, on diag's device).

    Within each full group of ``group_size`` columns: descending diag H; groups: by descending
    largest diag H (ties keep column order: stable sorts).  Columns of a partial last group
    follow in natural order.
    """
    n = diag.numel()
    g = n if group_size <= 0 else group_size
    full = n // g
    values, local = torch.sort(diag[:full * g].reshape(full, g), dim=1, descending=True, stable=True)
    groups = torch.argsort(values[:, 0], descending=True, stable=True)
    offsets = torch.arange(full, device=diag.device)[:, None] * g
    perm = (local + offsets)[groups].reshape(-1)
    return torch.cat([perm, torch.arange(full * g, n, device=diag.device)])


def loop_order(diag: torch.Tensor, order: str, group_size: int) -> torch.Tensor | None:
    """The permutation a config's ``column_order`` asks for (None: natural order)."""
    if order == "act_order":
        return act_order(diag)
    if order == "group_aware":
        return group_aware_order(diag, group_size)
    return None
