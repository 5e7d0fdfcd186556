"""Deterministic, category-stratified sampling of pairs.

Calibration sets are saved by name and hash with the quantized model, so a sample must
be the same on every run, machine and Python version.  Each pair's rank is a SHA-256 of
(seed, source_id, texts) — not Python's salted ``hash()`` nor a PRNG stream whose draws
depend on input order — so a pair's selection depends only on the seed and the pair
itself, and a larger ``n`` keeps every pair a smaller ``n`` chose (within a category).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Sequence

from ..contract import ConfigError, Pair
from .splits import split_items
from .validation import LoadedPairs


def sample_pairs(pairs: Sequence[Pair], n: int | None = None, seed: int = 0, stratify: bool = True) -> LoadedPairs:
    """``n`` pairs (all when ``n`` is None or >= len), in input order, keeping the source's bad-row list.

    With ``stratify`` each category gets ``n`` x its share (largest-remainder rounding, ties
    broken by category name), so small categories are neither lost nor inflated by chance.
    """
    if n is not None and n <= 0:
        raise ConfigError(f"sample size n must be positive, got {n}")
    bad_rows, source = getattr(pairs, "bad_rows", ()), getattr(pairs, "source", "")
    if n is None or n >= len(pairs):
        return LoadedPairs(pairs, bad_rows, source)
    if stratify:
        by_category: dict[str, list[int]] = defaultdict(list)
        for i, pair in enumerate(pairs):
            by_category[pair.category].append(i)
        quotas = _proportional_quotas({c: len(ix) for c, ix in by_category.items()}, n)
        chosen = {i for c, ix in by_category.items() for i in _lowest_ranks(pairs, ix, quotas[c], seed)}
    else:
        chosen = set(_lowest_ranks(pairs, range(len(pairs)), n, seed))
    return LoadedPairs([p for i, p in enumerate(pairs) if i in chosen], bad_rows, source)


def _proportional_quotas(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Largest-remainder allocation in integer arithmetic (no float rounding differences)."""
    total = sum(sizes.values())
    quotas = {c: n * size // total for c, size in sizes.items()}
    by_remainder = sorted(sizes, key=lambda c: (-(n * sizes[c] % total), c))
    for c in by_remainder[:n - sum(quotas.values())]:
        quotas[c] += 1
    return quotas


def _lowest_ranks(pairs: Sequence[Pair], indices, k: int, seed: int) -> list[int]:
    return sorted(indices, key=lambda i: (_rank(pairs[i], seed), i))[:k]


def _rank(pair: Pair, seed: int) -> bytes:
    key = "\x00".join((str(seed), pair.source_id, pair.stereo, pair.anti))
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).digest()


def pair_subset(loaded: Sequence[Pair], split: str = "all", holdout_fraction: float = 0.5, n: int | None = None,
                seed: int = 0, stratify: bool = True, split_by: str = "item") -> LoadedPairs:
    """A pair set as a pipeline and the API choose one: the ``split`` part of a source's pairs (hashed by item or
    by target term, ``split_by``), then a deterministic sample of ``n`` (the source's bad-row list kept)."""
    bad_rows, source = getattr(loaded, "bad_rows", ()), getattr(loaded, "source", "")
    part = split_items(loaded, split, holdout_fraction, split_by)
    return sample_pairs(LoadedPairs(part, bad_rows, source), n, seed, stratify)
