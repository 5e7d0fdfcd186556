"""GPTQ with the Fair-GPTQ pre-update: the whole algorithm, checkable against the papers.

Notation (spec section 1): W is out x in, H = (2/N) Σ_s X_s X_sᵀ is in x in,
H_bias = (2α/P) Σ_p D_p D_pᵀ, λ = damp * mean(diag H).

``quantize_weight`` is GPTQ (Frantar et al. 2023, Algorithm 1): columns are
quantized left to right, or in the order of core/reorder.py (act-order: by
descending diag H; group-aware reordering, GAR: by diag H within each group, then
groups by their largest diag H, so groups stay contiguous); each
column's rounding error, divided by the pivot of U (the upper Cholesky factor
of (H + λI)^-1), is fed back into the columns still to do.  Updates inside a
block of ``block_size`` columns are immediate, the rest of the matrix gets
them once per block (lazy batch).  Group scales are fitted when the loop
reaches a group's first column, on the already error-corrected weights.
On the CPU the column loop inside a block runs compiled (core/column_loop.py:
the same float32 steps, bit-identical codes); the torch loop written out here
runs on CUDA and wherever numba is missing.

``fair_update`` is the debiasing pre-update of Fair-GPTQ (Proskurina et al.
2025, Algorithm 1) in the spec's three modes; ``in_loop`` mode is simply
``quantize_weight(W, H + H_bias)``.

Deviation from the original GPTQ code, on purpose: the block size is shrunk to
a multiple of the group size (or grown to it), and with dynamic groups a block
ends only where a group starts in the loop (GAR with kept columns makes some
groups shorter), so a group never straddles a block.  The original fits a mid-block group's scale on weights that have not
yet received the block's own error feedback; aligned blocks make the lazy-batch
result equal the plain column-by-column algorithm, which the tests prove.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace

import torch

from . import column_loop
from .errors import ConfigError, HessianFactorizationError
from .quantizer import QuantConfig, dequantize_values, fit_scale_zero, quantize_values
from .reorder import loop_order
from .stability import StabilityRecord, check_finite, damping_lambda, inverse_cholesky_factor

FAIR_MODES = ("first_order", "exact", "in_loop")


@dataclass
class FactoredHessian:
    """H with dead columns fixed (H_dd = 1), in quantization order, with U: (H + λI)^-1 = Uᵀ U.

    ``perm`` is the column order of the loop (``order``: ``act_order``, ``group_aware`` (GAR),
    else None, with kept columns moved last); ``H`` and ``U`` are in that order.  Modules that share an input
    (q/k/v, gate/up) share one of these, so the Cholesky work is done once per
    input, as GPTQModel's shared-Hessian trick.
    """

    H: torch.Tensor
    U: torch.Tensor
    dead: torch.Tensor
    perm: torch.Tensor | None
    lam: float
    record: StabilityRecord
    keep: torch.Tensor | None = None  # input columns left unrounded; they are last in ``perm``
    order: str = "natural"  # QuantConfig.column_order this was made for


def factor_hessian(H: torch.Tensor, damp: float, *, act_order: bool = False, group_aware: int | None = None,
                   module: str = "?", keep: torch.Tensor | None = None,
                   factor_dtype: torch.dtype = torch.float64) -> FactoredHessian:
    """Fix dead columns on a copy, order columns, then the guarded factorisation.

    ``act_order`` sorts all columns by diag H; ``group_aware`` (a group size, -1 one group per
    row) orders them by GAR instead (core/reorder.py).

    ``keep`` (bool, one per input column) puts those columns last in the loop order (OWQ):
    they are never rounded and absorb the error feedback of every quantized column.
    """
    H = H.float()
    dead = torch.diagonal(H) == 0
    if bool(dead.all()):
        # Every column dead would silently zero the whole weight: refuse, as the guard does for H = 0.
        raise HessianFactorizationError(
            f"{module}: the Hessian is all zero (every input column is dead); the module never saw a "
            f"non-zero input. Check that calibration data reaches this layer (empty batches, all-padding masks).")
    if bool(dead.any()):
        H = H.clone()
        idx = dead.nonzero().flatten()
        H[idx, idx] = 1.0
    if act_order and group_aware is not None:
        raise ConfigError(f"{module}: act_order and group_aware are two column orders; ask for one")
    order = "act_order" if act_order else "natural" if group_aware is None else "group_aware"
    perm = loop_order(torch.diagonal(H), order, -1 if group_aware is None else group_aware)
    if keep is not None:
        keep = keep.to(device=H.device, dtype=torch.bool)
        seq = perm if perm is not None else torch.arange(H.shape[0], device=H.device)
        perm = torch.cat([seq[~keep[seq]], seq[keep[seq]]])
    if perm is not None:
        H = H[perm][:, perm]
    U, rec = inverse_cholesky_factor(H, damp, module=module, factor_dtype=factor_dtype)
    rec.dead_columns = int(dead.sum())
    return FactoredHessian(H=H, U=U, dead=dead, perm=perm, lam=damping_lambda(H, rec.damp_used), record=rec, keep=keep,
                           order=order)


def factor_for(H: torch.Tensor, config: QuantConfig, *, module: str = "?", keep: torch.Tensor | None = None,
               factor_dtype: torch.dtype = torch.float64) -> FactoredHessian:
    """The factorisation a GPTQ solve under ``config`` needs: the one place that calls :func:`factor_hessian`.

    Damping and the column order always come from the config here, so a shared factorisation and
    a module's own can never disagree on them; ``keep`` and ``factor_dtype`` come from the backend
    (:meth:`fairgptq.core.backend.Backend.factor`), float64 when the maths is called directly.
    """
    return factor_hessian(H, config.damp, act_order=config.act_order,
                          group_aware=config.group_size if config.act_group_aware else None, module=module, keep=keep,
                          factor_dtype=factor_dtype)


@dataclass
class QuantizedWeight:
    """Integer codes plus the grid that reads them back; the engine's output for one linear.

    ``scales``/``zeros`` are (n_groups, out) as in the GPTQ checkpoint format;
    ``g_idx[c]`` is the group of input column c; ``zeros`` holds integer zero points.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    bits: int
    group_size: int
    sym: bool
    stability: StabilityRecord = field(default_factory=StabilityRecord)
    #: Input columns kept in half precision (int32 indices, ascending) and their values (out x k, fp16).
    #: Their codes hold the zero point of a fitted group, so the integer part reads back as exactly 0
    #: there and any GPTQ kernel computes it unchanged: Ŵ = dequant(codes) + scatter(outlier_weight).
    outlier_idx: torch.Tensor | None = None
    outlier_weight: torch.Tensor | None = None

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        gi = self.g_idx.long()
        scale = self.scales[gi].T
        zero = self.zeros[gi].T.to(scale.dtype)
        W = dequantize_values(self.codes.to(scale.dtype), scale, zero)
        if self.outlier_idx is not None:
            W[:, self.outlier_idx.long()] = self.outlier_weight.to(W.dtype)
        return W.to(dtype)

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape


def reconstruction_loss(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """tr((W − Ŵ) H (W − Ŵ)ᵀ): the layer-wise loss GPTQ minimises, as Σ E ⊙ (E H) with E = W − Ŵ.

    E H is one float32 matrix product and only the final sum runs in float64: the product in
    float64 cost twice as much (about 3 s of a SmolLM2-135M quantization, for a figure in the
    report), and the float32 one agrees with it to about 1e-8 relative, on Hessians whose
    diagonal spans many orders of magnitude too (tests/test_gptq.py).
    """
    E = W.float() - W_hat.float()
    return float(torch.dot((E @ H.float()).double().flatten(), E.double().flatten()))


def _aligned_block(config: QuantConfig) -> int:
    """Block size that keeps every group inside one block (see module docstring)."""
    if config.group_size <= 0:
        return config.block_size
    g = config.group_size
    return g * max(1, config.block_size // g)


def quantize_weight(
    W: torch.Tensor, H: torch.Tensor, config: QuantConfig, *, module: str = "?",
    factored: FactoredHessian | None = None, keep: torch.Tensor | None = None,
) -> QuantizedWeight:
    """GPTQ-quantize W (out x in) under Hessian H (in x in); W and H are not modified.

    ``factored`` (from :func:`factor_for` with the same config and keep)
    skips the factorisation when several modules share H.  ``keep`` (bool per input
    column) leaves those columns unrounded: they come last in the loop, take every other
    column's error feedback and are returned in fp16 (``outlier_idx``/``outlier_weight``);
    group grids are fitted on the quantized columns only.

    Groups: a column's group is its own (c // g) except for dynamic groups under act-order or a
    keep mask without GAR, where groups follow the loop (g_idx then permutes the columns).
    A dynamic group's grid is fitted when the loop reaches its first column.

    >>> import torch
    >>> from fairgptq import QuantConfig, quantize_weight
    >>> W, X = torch.randn(8, 64), torch.randn(256, 64)
    >>> qw = quantize_weight(W, 2 * X.T @ X / 256, QuantConfig(bits=4, group_size=32))
    >>> qw.dequantize().shape, int(qw.codes.max()) <= 15
    (torch.Size([8, 64]), True)
    """
    check_finite(W, "the weight", module)
    fh = factored or factor_for(H, config, module=module, keep=keep)
    if not _same_keep(fh.keep, keep):
        raise ConfigError(f"{module}: the factored Hessian was made with a different keep mask than the one given")
    if fh.order != config.column_order:
        raise ConfigError(f"{module}: the factored Hessian was made for column order {fh.order}, "
                          f"the config says {config.column_order}")
    W = W.detach().to(device=fh.H.device, dtype=torch.float32).clone()
    rows, cols = W.shape
    if fh.H.shape != (cols, cols):
        raise ConfigError(f"{module}: Hessian shape {tuple(fh.H.shape)} does not match weight in_features {cols}")
    W[:, fh.dead] = 0
    maxq = config.maxq
    n_keep = 0 if keep is None else int(fh.keep.sum())
    n_quant = cols - n_keep
    g = config.group_size if config.group_size > 0 else cols
    n_groups = math.ceil(cols / g)
    scales = torch.zeros(n_groups, rows, dtype=torch.float32, device=W.device)
    zeros = torch.zeros(n_groups, rows, dtype=torch.float32, device=W.device)
    dynamic = config.group_size > 0 and not config.static_groups
    if not dynamic:
        # Static groups (and per-channel): grids fitted once, in natural column order, on the
        # starting weights, so g_idx stays c // g even with act-order.
        for gi in range(n_groups):
            scales[gi], zeros[gi] = fit_scale_zero(_fit_columns(W, fh.keep, gi * g, (gi + 1) * g), config)

    perm, U = fh.perm, fh.U
    positions = torch.arange(cols, device=W.device)
    if perm is not None:
        W = W[:, perm]
    # Group used at loop position j: the column's own, unless dynamic groups follow the loop order.
    follow_loop = perm is None or (dynamic and fh.order != "group_aware")
    col_group = positions // g if follow_loop else perm // g
    runs = _group_runs(col_group, n_quant) if dynamic else {}

    codes = torch.zeros(rows, cols, dtype=torch.float32, device=W.device)
    compiled = column_loop.runs_compiled(W)
    for i1, i2 in _blocks(sorted(runs) if dynamic else None, n_quant, _aligned_block(config)):
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for s1, s2 in _grid_runs(i1, i2, runs if dynamic else None):
            if dynamic:  # the group's grid, fitted on the weights its columns have now (error feedback included)
                gi = int(col_group[i1 + s1])
                scales[gi], zeros[gi] = fit_scale_zero(W1[:, s1:s2], config)
            if compiled:  # the loop below, compiled: the same float32 steps (core/column_loop.py)
                column_loop.quantize_columns(W1, U1, scales, zeros, col_group[i1:i2], maxq, s1, s2, Err1, codes, i1)
                continue
            for i in range(s1, s2):
                c = i1 + i
                gi = int(col_group[c])
                scale, zero = scales[gi], zeros[gi]
                w = W1[:, i]
                q = quantize_values(w, scale, zero, maxq)
                codes[:, c] = q
                err = (w - dequantize_values(q, scale, zero)) / U1[i, i]
                W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
                Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]

    outlier_idx = outlier_weight = None
    if n_keep:
        # Kept columns (loop positions n_quant..) hold their error-corrected values.  Their group is clamped
        # to a fitted one and their code set to its zero point (reads back as 0): a valid GPTQ layout.
        if dynamic and follow_loop:
            n_groups = max(1, math.ceil(n_quant / g))
            scales, zeros = scales[:n_groups], zeros[:n_groups]
        elif dynamic:  # GAR: a group whose every column is kept gets a grid fitted on them (codes read 0)
            for gi in set(range(n_groups)) - set(col_group[:n_quant].tolist()):
                scales[gi], zeros[gi] = fit_scale_zero(W[:, col_group == gi], config)
        col_group = col_group.clamp(max=n_groups - 1)
        codes[:, n_quant:] = zeros[col_group[n_quant:].long()].T
        outlier_idx, order = torch.sort(perm[n_quant:])
        outlier_weight = W[:, n_quant:][:, order].to(torch.float16)
    if perm is not None:
        inv = torch.argsort(perm)
        codes, col_group = codes[:, inv], col_group[inv]
    return QuantizedWeight(
        codes=codes.to(torch.uint8), scales=scales, zeros=zeros.to(torch.int32), g_idx=col_group.to(torch.int32),
        bits=config.bits, group_size=config.group_size, sym=config.sym,
        stability=replace(fh.record, module=module, events=list(fh.record.events)),
        outlier_idx=None if outlier_idx is None else outlier_idx.to(torch.int32), outlier_weight=outlier_weight)


def _group_runs(col_group: torch.Tensor, n_quant: int) -> dict[int, int]:
    """Loop position -> number of columns from there on in the same group (a dynamic group's first column)."""
    _, counts = torch.unique_consecutive(col_group[:n_quant], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return dict(zip(starts.tolist(), counts.tolist()))


def _grid_runs(i1: int, i2: int, runs: dict[int, int] | None) -> list[tuple[int, int]]:
    """Block-relative runs of columns whose grid is known before the run starts: each dynamic group
    (``runs``, by its first loop position; no group straddles a block), else the whole block."""
    if runs is None:
        return [(0, i2 - i1)]
    return [(c - i1, c - i1 + runs[c]) for c in range(i1, i2) if c in runs]


def _blocks(starts: list[int] | None, n_quant: int, block: int) -> list[tuple[int, int]]:
    """Loop blocks of ``block`` positions; with ``starts`` (dynamic groups) a block ends only where a group
    starts (as many whole groups as fit, at least one), so no group straddles two blocks."""
    ends = [n_quant] if starts is None else starts[1:] + [n_quant]
    bounds, i1 = [], 0
    while i1 < n_quant:
        i2 = min(i1 + block, n_quant)
        if starts is not None:
            j = bisect.bisect_right(ends, i2) - 1
            i2 = ends[j] if j >= 0 and ends[j] > i1 else ends[bisect.bisect_right(ends, i1)]
        bounds.append((i1, i2))
        i1 = i2
    return bounds


def _same_keep(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool((a.cpu() == b.cpu().bool()).all())


def _fit_columns(W: torch.Tensor, keep: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    """The columns a static group's grid is fitted on: its columns that are not kept (all if every one is)."""
    cols = W[:, start:stop]
    if keep is None:
        return cols
    quantized = ~keep[start:stop]
    return cols[:, quantized] if bool(quantized.any()) else cols


@dataclass
class FairUpdate:
    """A pre-update of W from the objectives' terms: the new weight and what to report about it."""

    W: torch.Tensor
    mode: str
    radius: float
    overshoot: bool
    rel_change: float
    events: list[str] = field(default_factory=list)
    #: what the exact update's factorisation of H + H_bias took (None: no exact update with a quadratic term)
    factor_record: StabilityRecord | None = None


def first_order_radius(fh: FactoredHessian, H_bias: torch.Tensor, iters: int = 100, tol: float = 1e-5) -> float:
    """Spectral radius of H_bias (H + λI)^-1, by power iteration on the similar PSD matrix U H_bias Uᵀ.

    ``first_order`` overshoots (flips the sign of the bias directions it should shrink) once this
    reaches 1 (spec section 2).  Matrix-vector products only: O(iters * d^2), no eigendecomposition.
    """
    Hb = _in_loop_order(H_bias.float().to(fh.U.device), fh.perm)
    U = fh.U
    v = torch.ones(U.shape[0], dtype=U.dtype, device=U.device) / math.sqrt(U.shape[0])
    est = 0.0
    for _ in range(iters):
        w = U @ (Hb @ (U.T @ v))
        new = float(torch.linalg.vector_norm(w))
        if new == 0.0:
            return 0.0
        v = w / new
        if abs(new - est) <= tol * new:
            return new
        est = new
    return est


def _in_loop_order(M: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    return M if perm is None else M[perm][:, perm]


def apply_inverse(fh: FactoredHessian, M: torch.Tensor) -> torch.Tensor:
    """M (H + λI)^-1 for rows M (out x in, natural column order), through GPTQ's factor: (M Uᵀ) U.

    The step a linear term ⟨C, W' − W⟩ takes is −C (H + λI)^-1: the same matmul chain as
    ``first_order``, so it costs what the paper's update costs.
    """
    Mp = M.to(device=fh.U.device, dtype=fh.U.dtype)
    if fh.perm is not None:
        Mp = Mp[:, fh.perm]
    out = (Mp @ fh.U.T) @ fh.U
    return out if fh.perm is None else out[:, torch.argsort(fh.perm)]


def apply_damped(fh: FactoredHessian, M: torch.Tensor) -> torch.Tensor:
    """M (H + λI) for rows M (out x in, natural column order): the inverse of :func:`apply_inverse`.

    A linear term C = λ G (H + λI) has the minimiser W − λG: how an objective asks for a step in
    the plain Euclidean metric through the same layer objective.
    """
    Mp = M.to(device=fh.H.device, dtype=fh.H.dtype)
    if fh.perm is not None:
        Mp = Mp[:, fh.perm]
    out = Mp @ fh.H + fh.lam * Mp
    return out if fh.perm is None else out[:, torch.argsort(fh.perm)]


def fair_update_detailed(
    W: torch.Tensor, fh: FactoredHessian, H_bias: torch.Tensor | None, mode: str = "first_order", *,
    linear: torch.Tensor | None = None, module: str = "?", on_overshoot: str = "warn",
    factor_dtype: torch.dtype = torch.float64,
) -> FairUpdate:
    """The pre-update of W that minimises the layer objective (core/objective.py) with a factored H.

    With Hd = H + λI, H_bias the quadratic term and C the linear term (``linear``, out x in):

    first_order: W' = W − (W H_bias + C) Hd^-1   (the paper's Algorithm 1; C's step is exact: linear in W)
    exact:       W' = (W Hd − C)(Hd + H_bias)^-1, the minimiser of
                 ½tr((W'−W) Hd (W'−W)ᵀ) + ½tr(W' H_bias W'ᵀ) + ⟨C, W' − W⟩
    Without H_bias both are W' = W − C Hd^-1, whose first-order change of a score S with
    C = λ ∂S/∂W is −λ tr(G Hd^-1 Gᵀ).  ``on_overshoot`` (first_order only, radius >= 1): "warn" keeps
    the paper's update and records it, "exact" switches this module to the exact update, "error"
    refuses.  The exact mode's factorisation goes through the stability guard
    (:func:`inverse_cholesky_factor`, in ``factor_dtype``) with the λ of H.
    """
    if mode not in ("first_order", "exact"):
        raise ConfigError(f"{module}: fair update mode {mode!r} is not a pre-update; use first_order or exact "
                          f"(in_loop runs GPTQ on H + H_bias instead)")
    if on_overshoot not in ("warn", "exact", "error"):
        raise ConfigError(f"on_overshoot={on_overshoot!r}: use warn, exact or error")
    W0 = W.detach().to(device=fh.U.device, dtype=torch.float32)
    events: list[str] = []
    radius, overshoot = 0.0, False
    record: list[StabilityRecord] = []
    if linear is not None:
        check_finite(linear, "the linear term", module)
        if tuple(linear.shape) != tuple(W0.shape):
            raise ConfigError(f"{module}: the linear term has shape {tuple(linear.shape)}, the weight {tuple(W0.shape)}")
    if H_bias is None:
        Wn = W0 if linear is None else W0 - apply_inverse(fh, linear.float())
        mode = "exact"  # with no quadratic term every mode takes the same step
    else:
        check_finite(H_bias, "H_bias", module)
        radius = first_order_radius(fh, H_bias)
        overshoot = radius >= 1.0
        if overshoot:
            msg = (f"first_order overshoot risk: spectral radius of H_bias (H+λI)^-1 = {radius:.3g} >= 1 "
                   f"(α too large for this module's calibration)")
            if mode == "first_order" and on_overshoot == "error":
                raise ConfigError(f"{module}: {msg}. Lower α, or set on_overshoot: exact.")
            if mode == "first_order" and on_overshoot == "exact":
                mode = "exact"
                msg += "; switched to the exact update"
            events.append(msg)
        Hb = H_bias.float().to(fh.U.device)
        rhs = W0 @ Hb if linear is None else W0 @ Hb + linear.float().to(W0.device)
        Wn = W0 - apply_inverse(fh, rhs) if mode == "first_order" else _exact_update(W0, fh, Hb, linear, module,
                                                                                      factor_dtype, events, record)
    rel = float(torch.linalg.matrix_norm(Wn - W0) / torch.linalg.matrix_norm(W0).clamp_min(1e-30))
    return FairUpdate(W=Wn, mode=mode, radius=radius, overshoot=overshoot, rel_change=rel, events=events,
                      factor_record=record[0] if record else None)


def _exact_update(W0: torch.Tensor, fh: FactoredHessian, Hb: torch.Tensor, linear: torch.Tensor | None,
                  module: str, factor_dtype: torch.dtype, events: list[str],
                  record: list[StabilityRecord]) -> torch.Tensor:
    """W' = (W Hd − C)(Hd + H_bias)^-1 with (Hd + H_bias)^-1 = Vᵀ V from the guarded factorisation."""
    dt = torch.float64 if factor_dtype == torch.float64 else torch.float32
    perm = fh.perm
    Wp = W0 if perm is None else W0[:, perm]
    Hbp = _in_loop_order(Hb, perm)
    Hd = fh.H.to(dt) + fh.lam * torch.eye(fh.H.shape[0], dtype=dt, device=fh.H.device)
    cause = ("H itself was not positive semi-definite (it needed an eigenvalue repair to factor); add calibration "
             "data or raise damp" if fh.record.eigen_repair else
             "an extra H_bias term that is not positive semi-definite; check that every objective returns a PSD "
             "matrix (a sum of D Dᵀ terms)")
    V, rec = inverse_cholesky_factor(fh.H.to(dt) + Hbp.to(dt), fh.record.damp_used, module=module, likely_cause=cause,
                                     factor_dtype=factor_dtype, damp_of=fh.H)
    events.extend(f"exact update: {e}" for e in rec.events)
    record.append(rec)
    rhs = Wp.to(dt) @ Hd
    if linear is not None:
        C = linear.to(device=Wp.device, dtype=dt)
        rhs = rhs - (C if perm is None else C[:, perm])
    Wn = ((rhs @ V.T) @ V).float()
    return Wn if perm is None else Wn[:, torch.argsort(perm)]


def fair_update(
    W: torch.Tensor, H: torch.Tensor, H_bias: torch.Tensor, mode: str = "first_order", damp: float = 0.01,
) -> torch.Tensor:
    """Public one-call form of the Fair-GPTQ pre-update: W' for the spec's ``first_order`` or ``exact``.

    ``in_loop`` has no pre-update: run ``quantize_weight(W, H + H_bias, config)``.

    >>> import torch
    >>> from fairgptq import fair_update
    >>> W, X, D = torch.randn(8, 64), torch.randn(256, 64), torch.randn(16, 64)
    >>> H, H_bias = 2 * X.T @ X / 256, 2 * 0.1 * D.T @ D / 16
    >>> W_fair = fair_update(W, H, H_bias, mode="exact")
    >>> bool((W_fair @ D.T).norm() < (W @ D.T).norm())      # the pair gap shrinks
    True
    """
    if mode == "in_loop":
        raise ConfigError("fair_update(mode='in_loop') has no pre-update: call quantize_weight(W, H + H_bias, config)")
    if mode not in FAIR_MODES:
        raise ConfigError(f"unknown fair update mode {mode!r}; use one of {FAIR_MODES}")
    return fair_update_detailed(W, factor_for(H, QuantConfig(damp=damp)), H_bias, mode).W
