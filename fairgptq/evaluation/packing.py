"""Shared-prefix packing: score many token sequences in one row as a prefix tree.

Likelihood benchmarks are full of repeated prefixes: every CrowS-Pairs pair is two
sentences that agree up to the changed word, every sentence starts with the same prefix
token, and every multiple-choice option repeats its question.  A causal LM's hidden state
at a position depends only on the tokens before it, so a prefix shared by several
sequences needs to run through the model once.  This module packs sequences into rows
of a prefix tree (a trie): each distinct prefix is one node, a node's position id is its
depth, and the attention mask lets a node see exactly its ancestors and itself.  The
forward is then the unpacked forward of every sequence, computed once per shared node.

On the full CrowS-Pairs file with SmolLM2's tokenizer, rows of 128 run about three quarters
of the positions that one-row-per-sentence batches run (the prefix token once per row
instead of once per sentence, and the pairs' shared beginnings once per pair);
``benchmarks/bench_evaluation.py`` prints both counts and the times.

Sequences are packed in lexicographic order, so each sequence's longest shared prefix
within a row is with the sequence just before it, and a row closes when the next
sequence's new nodes would not fit in ``max_tokens`` (a longer sequence gets a row of
its own).  Rows are then batched by length, longest first, so padding is small and an
out-of-memory error shows in the first batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..core.sequences import common_prefix_length


@dataclass
class PackedRow:
    """One row of a prefix tree: node tokens, parents, depths, and each member's path of node indices."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # -1 for a root
    depths: list[int] = field(default_factory=list)
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (sequence index, node index per token)

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestor_mask(self) -> torch.Tensor:
        """Boolean (n, n): entry [j, i] is True when node i is node j or one of its ancestors."""
        n = len(self.tokens)
        allowed = torch.zeros(n, n, dtype=torch.bool)
        for j, parent in enumerate(self.parents):  # parents come before children, so rows fill in order
            if parent >= 0:
                allowed[j] = allowed[parent]
            allowed[j, j] = True
        return allowed


def pack_sequences(sequences: Sequence[Sequence[int]], max_tokens: int) -> list[PackedRow]:
    """Pack token sequences into prefix-tree rows of at most ``max_tokens`` nodes (longer sequences alone)."""
    rows: list[PackedRow] = []
    row: PackedRow | None = None
    prev: Sequence[int] = ()
    prev_path: list[int] = []
    for i in sorted(range(len(sequences)), key=lambda k: tuple(sequences[k])):
        seq = sequences[i]
        shared = common_prefix_length(prev, seq) if row is not None else 0
        if row is None or (row.members and len(row) + len(seq) - shared > max_tokens):
            row, shared = PackedRow(), 0
            rows.append(row)
        path = prev_path[:shared]
        for token in seq[shared:]:
            row.parents.append(path[-1] if path else -1)
            row.depths.append(len(path))
            row.tokens.append(token)
            path.append(len(row.tokens) - 1)
        row.members.append((i, path))
        prev, prev_path = seq, path
    return rows


def batch_rows(rows: Sequence[PackedRow], rows_per_batch: int) -> list[list[PackedRow]]:
    """Group rows into batches of similar length, longest first (small padding, early OOM)."""
    ordered = sorted(rows, key=len, reverse=True)
    return [ordered[k:k + rows_per_batch] for k in range(0, len(ordered), rows_per_batch)]


def row_tensors(rows: Sequence[PackedRow], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ids, position ids and additive 4D attention mask (batch, 1, width, width) for a batch of rows.

    The mask uses the dtype's minimum rather than -inf (as transformers does), and a padding
    position attends to itself so no softmax row is empty (an empty row would be NaN, and NaN
    times a zero attention weight still contaminates the real positions).
    """
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    blocked = torch.ones(len(rows), 1, width, width, dtype=torch.bool)
    for b, row in enumerate(rows):
        n = len(row)
        ids[b, :n] = torch.tensor(row.tokens)
        positions[b, :n] = torch.tensor(row.depths)
        blocked[b, 0, :n, :n] = ~row.ancestor_mask()
        blocked[b, 0, range(n, width), range(n, width)] = False
    mask = torch.zeros(blocked.shape, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)
    return ids, positions, mask
