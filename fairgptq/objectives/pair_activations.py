"""From pairs to token streams, and from captured activations to pair differences D_p.

The two streams hold the stereotypical and the anti-stereotypical sentence of pair i in
row i of the same batch index, so differences never depend on list order.  Pad positions
are never compared (the reference compares padded positions).

Alignment of the two token sequences (spec section 4):
- ``positional``: token t against token t for t < min(n⁰, n¹) (the reference, minus padding).
- ``aligned`` (default): the common token prefix is skipped (a causal model gives both
  sentences identical activations there, so D = 0), the common suffix is matched from the
  end (so a filler of another token length does not shift it), and the differing span
  contributes one difference: mean over the span⁰ tokens minus mean over the span¹ tokens.
  A span that is empty on one side (an insertion) has no counterpart and contributes nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..contract import (Captured, ConfigError, Pair, TokenBatch, common_prefix_length, identical_pairs_advice,
                        pad_id, right_padded)

ALIGNMENTS = ("aligned", "positional")
logger = logging.getLogger("fairgptq.objectives")


@dataclass(frozen=True)
class PairAlignment:
    """Index plan of one batch: token pairs to subtract, and spans to average then subtract."""

    tok0: torch.Tensor  # flat indices into the stereo batch (row * seq0 + t)
    tok1: torch.Tensor
    span0: torch.Tensor  # flat token indices of the stereo span tokens
    span0_seg: torch.Tensor  # which span (0..n_spans-1) each of those belongs to
    span1: torch.Tensor
    span1_seg: torch.Tensor
    n_spans: int


def plan_alignment(ids0: list[list[int]], ids1: list[list[int]], seq0: int, seq1: int, mode: str) -> PairAlignment:
    """Index plan for a batch of pairs (token id lists without padding, padded lengths seq0/seq1)."""
    if mode not in ALIGNMENTS:
        raise ConfigError(f"unknown alignment {mode!r}; use one of {ALIGNMENTS}")
    t0, t1, s0, g0, s1, g1 = [], [], [], [], [], []
    n_spans = 0
    for row, (a, b) in enumerate(zip(ids0, ids1)):
        n0, n1 = len(a), len(b)
        if mode == "positional":
            m = min(n0, n1)
            t0 += [row * seq0 + t for t in range(m)]
            t1 += [row * seq1 + t for t in range(m)]
            continue
        p = common_prefix_length(a, b)
        s = common_prefix_length(a[::-1], b[::-1])
        s = min(s, n0 - p, n1 - p)
        t0 += [row * seq0 + n0 - k for k in range(1, s + 1)]
        t1 += [row * seq1 + n1 - k for k in range(1, s + 1)]
        span_a, span_b = range(p, n0 - s), range(p, n1 - s)
        if len(span_a) and len(span_b):
            s0 += [row * seq0 + t for t in span_a]
            g0 += [n_spans] * len(span_a)
            s1 += [row * seq1 + t for t in span_b]
            g1 += [n_spans] * len(span_b)
            n_spans += 1
    L = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return PairAlignment(L(t0), L(t1), L(s0), L(g0), L(s1), L(g1), n_spans)


def pair_differences(c0: Captured, c1: Captured, plan: PairAlignment) -> torch.Tensor:
    """D for one batch as rows (n_differences, in), in float32 whatever the model dtype."""
    x0 = c0.x.reshape(-1, c0.x.shape[-1]).float()
    x1 = c1.x.reshape(-1, c1.x.shape[-1]).float()
    parts = [x0[plan.tok0.to(x0.device)] - x1[plan.tok1.to(x1.device)]]
    if plan.n_spans:
        parts.append(_segment_mean(x0, plan.span0, plan.span0_seg, plan.n_spans)
                     - _segment_mean(x1, plan.span1, plan.span1_seg, plan.n_spans))
    return torch.cat(parts)


def _segment_mean(x: torch.Tensor, idx: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, x.shape[-1], dtype=x.dtype, device=x.device)
    out.index_add_(0, seg.to(x.device), x[idx.to(x.device)])
    counts = torch.bincount(seg, minlength=n).clamp_min(1).to(x)
    return out / counts[:, None]


@dataclass
class PairStreams:
    """The two token streams of a pair set plus each batch's alignment plan."""

    stereo: list[TokenBatch]
    anti: list[TokenBatch]
    plans: list[PairAlignment]


def tokenize_pairs(pairs: list[Pair], tokenizer, *, alignment: str = "aligned", batch_size: int = 32,
                   max_length: int = 128) -> PairStreams:
    """Right-padded batches, pair i of the set in the same row of both streams."""
    stereo, anti, plans = [], [], []
    pad = pad_id(tokenizer)
    blind: list[Pair] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        ids0 = [tokenizer(p.stereo, truncation=True, max_length=max_length).input_ids for p in chunk]
        ids1 = [tokenizer(p.anti, truncation=True, max_length=max_length).input_ids for p in chunk]
        blind.extend(p for p, a, b in zip(chunk, ids0, ids1) if a == b)
        b0, b1 = right_padded(ids0, pad), right_padded(ids1, pad)
        stereo.append(b0)
        anti.append(b1)
        plans.append(plan_alignment(ids0, ids1, b0.input_ids.shape[1], b1.input_ids.shape[1], alignment))
    _check_identical(blind, len(pairs), tokenizer, max_length)
    return PairStreams(stereo, anti, plans)


def _check_identical(blind: list[Pair], total: int, tokenizer, max_length: int) -> None:
    """Pairs whose two sentences read as the same tokens: D = 0, they add nothing.

    Silently, every ΔW came out 0 when all pairs read that way; now that is an error and a partial
    loss a warning with the count, each naming why (cut at ``max_length``, or words the tokenizer
    reads alike) and its own fix.
    """
    if not blind:
        return
    reason, fix = identical_pairs_advice(tokenizer, blind, max_length)
    if len(blind) == total:
        raise ConfigError(f"all {total} pairs {reason}, so every pair difference is 0 and the fairness term would "
                          f"change nothing; {fix}")
    logger.warning("%d of %d pairs %s and contribute nothing; %s", len(blind), total, reason, fix)