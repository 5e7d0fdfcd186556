"""Uniform affine quantization grid: the rounding that GPTQ's column loop calls.

A group of weights w (rows x columns) gets one scale s and one integer zero z
per row; a weight is coded as q = clamp(round(w / s) + z, 0, 2^b - 1) and read
back as s * (q - z).  Symmetric grids force the range through 0 with
z = 2^(b-1), as the spec and the GPTQ checkpoint format expect.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, StrictInt, TypeAdapter, ValidationError,
                      model_validator)

from .errors import ConfigError

SUPPORTED_BITS = (2, 3, 4, 8)


def _check_group_size(v: int) -> int:
    if v != -1 and v <= 0:
        raise ValueError(f"must be -1 (one group per row) or a positive integer (got {v})")
    return v


def check_column_order(act_order: bool, act_group_aware: bool) -> None:
    """Refuse two column orders at once (the YAML schema calls this too, so the message carries its path).

    ``act_order`` sorts every column by diag H; ``act_group_aware`` (GAR) sorts within each group
    and then the groups: one loop has one order, so both on is a contradiction, not a combination.
    ``static_groups`` combines with either (grids fitted on the starting weights in natural order).
    """
    if act_order and act_group_aware:
        raise ValueError("act_order and act_group_aware are two different column orders; set one of them to false "
                         "(act_group_aware keeps every group's columns contiguous, act_order sorts all columns)")


_BOOL = TypeAdapter(bool)


def _named_true(settings: dict, key: str) -> bool:
    """Whether ``settings`` sets ``key`` to something that validates as true (a bad value is the field's to report)."""
    try:
        return _BOOL.validate_python(settings.get(key, False))
    except ValidationError:
        return False


def resolve_column_order(settings: Any) -> Any:
    """The settings with the column-order keys they leave out filled in: static act-order unless they name another.

    The default order is static act-order (``act_order`` and ``static_groups`` true; measured in
    docs/quantizer.md), but a default must not overrule an order the user wrote: naming
    ``act_group_aware: true`` gives GAR, so ``act_order`` resolves to false (not a collision with
    the default) and ``static_groups`` to false (GAR's own default, dynamic per-group grids; not
    inherited from the act-order default); ``static_groups`` left out follows the resolved
    ``act_order``.  Keys that are given are kept as given, so the resolved values are the plain
    bools a saved config, its hash and ``--reuse`` compare.
    """
    if not isinstance(settings, dict):
        return settings
    settings = dict(settings)
    if "act_order" not in settings:
        settings["act_order"] = not _named_true(settings, "act_group_aware")
    if "static_groups" not in settings:
        settings["static_groups"] = _named_true(settings, "act_order")
    return settings


class OneColumnOrder(BaseModel):
    """The column-order rules, shared by :class:`QuantConfig` and the pipeline's ``quantization:`` schema.

    Defaults resolved by :func:`resolve_column_order` before the fields validate, and the one
    contradiction refused by :func:`check_column_order` after: one definition, so a Python config
    and a YAML section with the same keys resolve to the same run.
    """

    @model_validator(mode="before")
    @classmethod
    def _default_column_order(cls, data: Any) -> Any:
        return resolve_column_order(data)

    @model_validator(mode="after")
    def _one_column_order(self) -> Any:
        check_column_order(self.act_order, self.act_group_aware)  # type: ignore[attr-defined]
        return self


class QuantConfig(OneColumnOrder):
    """Settings of one GPTQ run (the names other tooling calls; keep them stable).

    The pipeline's ``quantization:`` section is generated from these fields
    (fairgptq.pipeline.schema.QuantizationSpec), so a new setting is one field here: the YAML
    schema, its error messages with YAML paths, and the engine's config all follow.  Built
    directly, a bad value raises :class:`ConfigError` naming the setting.

    group_size -1 means one scale per output row (per-channel).  ``mse`` turns on a grid search
    over range-shrink factors (norm 2.4, as the GPTQ paper's code) instead of plain min/max ranges.

    Column order of the GPTQ loop (fairgptq/core/reorder.py; docs/quantizer.md): none (both off),
    ``act_order`` (all columns by descending diag H; with ``static_groups`` the grids are fitted
    before the loop so g_idx stays c // g) or ``act_group_aware`` (GAR: columns by diag H within
    each group, groups by their largest diag H; groups stay contiguous, g_idx is c // g).  The
    default is static act-order (``act_order`` and ``static_groups`` true, the lowest perplexity
    measured); an order that is named wins over it (:func:`resolve_column_order`):
    ``QuantConfig(act_group_aware=True)`` is GAR with dynamic groups, ``QuantConfig(act_order=False)``
    the natural order with dynamic groups.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    bits: Literal[SUPPORTED_BITS] = 4  # type: ignore[valid-type]
    group_size: Annotated[StrictInt, AfterValidator(_check_group_size)] = 128
    sym: bool = True
    act_order: bool = True  # unless act_group_aware is named true (resolve_column_order)
    static_groups: bool = True  # when left out: whatever act_order resolves to
    act_group_aware: bool = False
    damp: float = Field(0.01, gt=0, le=1)  # 0.01 is the GPTQ default
    block_size: PositiveInt = 128
    mse: bool = False

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}={err.get('input')!r}: {err['msg']}"
                                 for err in e.errors())
            raise ConfigError(f"invalid quantization setting: {problems}") from None

    @property
    def column_order(self) -> str:
        """The GPTQ loop's column order: ``natural``, ``act_order`` or ``group_aware``."""
        return "act_order" if self.act_order else "group_aware" if self.act_group_aware else "natural"

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1

    def to_dict(self) -> dict:
        return self.model_dump()


def fit_scale_zero(w: torch.Tensor, config: QuantConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale and integer zero for the weights ``w`` (rows x columns).

    Ranges always include 0 (so exact zeros stay exact); an all-zero row gets
    the range [-1, 1] so its scale is never 0.
    """
    maxq = config.maxq
    w = w.float()
    xmin = torch.clamp(w.min(dim=1).values, max=0)
    xmax = torch.clamp(w.max(dim=1).values, min=0)
    if config.sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(empty, torch.full_like(xmax, 1.0), xmax)

    if config.mse:
        xmin, xmax = _mse_shrink(w, xmin, xmax, config)

    scale = (xmax - xmin) / maxq
    if config.sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale)
    return scale, zero


def _mse_shrink(
    w: torch.Tensor, xmin: torch.Tensor, xmax: torch.Tensor, config: QuantConfig,
    grid: int = 100, max_shrink: float = 0.8, norm: float = 2.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink each row's range to the factor that minimises the |error|^2.4 of rounding."""
    maxq = config.maxq
    best = torch.full((w.shape[0],), float("inf"), dtype=w.dtype, device=w.device)
    best_min, best_max = xmin.clone(), xmax.clone()
    for i in range(int(max_shrink * grid)):
        p = 1 - i / grid
        lo, hi = p * xmin, p * xmax
        scale = (hi - lo) / maxq
        zero = torch.full_like(scale, (maxq + 1) / 2) if config.sym else torch.round(-lo / scale)
        q = dequantize_values(quantize_values(w, scale[:, None], zero[:, None], maxq), scale[:, None], zero[:, None])
        err = (q - w).abs().pow(norm).sum(dim=1)
        better = err < best
        best = torch.where(better, err, best)
        best_min = torch.where(better, lo, best_min)
        best_max = torch.where(better, hi, best_max)
    return best_min, best_max


def quantize_values(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer codes (as float) of ``w`` on the grid (scale, zero)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def dequantize_values(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return scale * (q - zero)


def round_to_nearest(w: torch.Tensor, config: QuantConfig) -> torch.Tensor:
    """Round-to-nearest baseline on the same grid and groups GPTQ uses (no error feedback)."""
    w = w.float()
    cols = w.shape[1]
    g = cols if config.group_size <= 0 else config.group_size
    out = torch.empty_like(w)
    for start in range(0, cols, g):
        block = w[:, start:start + g]
        scale, zero = fit_scale_zero(block, config)
        out[:, start:start + g] = dequantize_values(
            quantize_values(block, scale[:, None], zero[:, None], config.maxq), scale[:, None], zero[:, None])
    return out
