"""Tokenising an objective's sentences into the driver's batches: the helper every objective shares.

Batches are right-padded (the default position ids of a causal LM stay correct) with a mask
that keeps pad positions out of H, H_bias and every mean.  An objective that builds its
streams from texts needs nothing else.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..core.objective import TokenBatch


def right_padded(ids: Sequence[Sequence[int]], pad: int) -> TokenBatch:
    """One batch from token id lists: padded on the right to the longest, mask 1 on real tokens."""
    seq = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), seq), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), seq), dtype=torch.long)
    for r, row in enumerate(ids):
        input_ids[r, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[r, :len(row)] = 1
    return TokenBatch(input_ids, mask)


def identical_pairs_advice(tokenizer, pairs: Sequence[Any], max_length: int) -> tuple[str, str]:
    """Why these pairs read as identical token for token, and the fix: ``(reason, fix)``.

    Two causes look alike from the ids: sentences that differ only past ``max_length`` tokens (cut
    away: raise the length), and sentences whose differing words the tokenizer reads as the same tokens
    (out-of-vocabulary words all become its unknown token: no length helps).  Each is counted and named.
    """
    cut = sum(tokenizer(p.stereo).input_ids != tokenizer(p.anti).input_ids for p in pairs)
    alike = len(pairs) - cut
    length_fix = f"raise calibration.max_length (now {max_length}) or shorten the sentences"
    vocab_fix = "use words in the tokenizer's vocabulary, or drop those pairs"
    if not alike:
        return f"differ only after the first {max_length} tokens", length_fix
    vocab = "differ only in words the tokenizer reads as the same tokens (out-of-vocabulary words all become its " \
            "unknown token)"
    if not cut:
        return vocab, vocab_fix
    return (f"read as the same tokens ({cut} differ only after the first {max_length} tokens, {alike} {vocab})",
            f"{length_fix}; {vocab_fix}")


def pad_id(tokenizer) -> int:
    """The tokenizer's pad token (0 when it has none: the mask hides it either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def text_batches(tokenizer, texts: Sequence[str], *, batch_size: int = 32, max_length: int = 128) -> list[TokenBatch]:
    """``texts`` tokenised (the tokenizer's own special tokens, cut at ``max_length``) in right-padded batches."""
    pad = pad_id(tokenizer)
    return [right_padded([tokenizer(t, truncation=True, max_length=max_length)["input_ids"]
                          for t in texts[i:i + batch_size]], pad)
            for i in range(0, len(texts), batch_size)]
