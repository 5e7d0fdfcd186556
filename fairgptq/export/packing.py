"""Bit packing of GPTQ integer codes into int32 words (the AutoGPTQ / GPTQModel layout).

Along the packed axis every run of values is a little-endian bit stream: value j of
a run starts at bit ``bits * j``.  For 2, 4 and 8 bits a run is one word (16, 8, 4
values); for 3 bits it is 32 values in 3 words, a value may straddle two words, exactly
as AutoGPTQ's ``pack`` writes it (``intweight[i] << 30`` then ``intweight[i] >> 2``).
Words are stored as int32 (the unsigned pattern reinterpreted), as every loader expects.
"""
from __future__ import annotations

import math

import torch

from ..core.errors import ConfigError

PACK_BITS = (2, 3, 4, 8)


def run_shape(bits: int) -> tuple[int, int]:
    """(values per run, int32 words per run) for ``bits``."""
    if bits not in PACK_BITS:
        raise ConfigError(f"cannot pack {bits}-bit codes; the GPTQ format supports {PACK_BITS}")
    values = 32 // math.gcd(32, bits)
    return values, values * bits // 32


def pack_last(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer ``values`` (each in [0, 2^bits)) along the last axis into int32 words."""
    n_val, n_words = run_shape(bits)
    length = values.shape[-1]
    if length % n_val:
        raise ConfigError(f"{bits}-bit packing needs a multiple of {n_val} values along the packed axis, got {length}")
    v = values.to(torch.int64)
    if bool((v < 0).any()) or bool((v >= 2**bits).any()):
        raise ConfigError(f"codes outside [0, {2**bits - 1}] cannot be packed in {bits} bits")
    v = v.reshape(*v.shape[:-1], length // n_val, n_val)
    words = torch.zeros(*v.shape[:-1], n_words, dtype=torch.int64)
    for j in range(n_val):
        word, shift = divmod(bits * j, 32)
        words[..., word] |= (v[..., j] << shift) & 0xFFFFFFFF
        if shift + bits > 32:
            words[..., word + 1] |= v[..., j] >> (32 - shift)
    words = words.reshape(*values.shape[:-1], length // n_val * n_words)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_last(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_last`: int32 words -> int64 values along the last axis."""
    n_val, n_words = run_shape(bits)
    w = words.to(torch.int64) & 0xFFFFFFFF
    if w.shape[-1] % n_words:
        raise ConfigError(f"{w.shape[-1]} packed words is not a whole number of {bits}-bit runs")
    w = w.reshape(*w.shape[:-1], w.shape[-1] // n_words, n_words)
    out = torch.empty(*w.shape[:-1], n_val, dtype=torch.int64)
    mask = 2**bits - 1
    for j in range(n_val):
        word, shift = divmod(bits * j, 32)
        v = w[..., word] >> shift
        if shift + bits > 32:
            v = v | (w[..., word + 1] << (32 - shift))
        out[..., j] = v & mask
    return out.reshape(*words.shape[:-1], -1)
