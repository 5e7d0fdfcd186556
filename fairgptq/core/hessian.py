"""Hessian accumulation with the spec's normalisation: per sentence, pad positions excluded.

H = (2/N) Σ_s X_s X_sᵀ, N = number of sentences (each sentence contributes the sum over
its non-pad tokens).  This is the normalisation α is defined against (spec section 1),
and matches the original GPTQ code, which weights every calibration sample equally.
"""
from __future__ import annotations

import torch

from .stability import check_finite


class HessianAccumulator:
    """Running Σ_s X_s X_sᵀ over masked tokens, in float32 (or ``dtype``), in chunks to bound memory."""

    def __init__(self, dim: int, device: torch.device | str = "cpu", chunk_tokens: int = 8192,
                 dtype: torch.dtype = torch.float32) -> None:
        self.sum = torch.zeros(dim, dim, dtype=dtype, device=device)
        self.sentences = 0
        self.tokens = 0
        self.chunk_tokens = chunk_tokens

    def add(self, x: torch.Tensor, mask: torch.Tensor | None = None, *, module: str = "?") -> None:
        """Add a batch x (batch, seq, dim) whose real tokens are where mask (batch, seq) is true.

        x as (batch·seq, dim) rows with a (batch, seq) mask (a routed expert's input, which the MoE block
        flattens) is counted per sentence like the rest; any other 2-D x is one sentence.
        """
        if x.dim() == 2 and mask is not None and mask.dim() == 2 and x.shape[0] == mask.numel():
            x = x.reshape(*mask.shape, x.shape[-1])
        if x.dim() == 2:
            x = x.unsqueeze(0)
        flat = x.reshape(-1, x.shape[-1])
        batch = x.shape[0]
        if mask is not None:
            mask = mask.to(torch.bool).to(flat.device)
            batch = int(mask.reshape(x.shape[0], -1).any(dim=1).sum())  # an all-padding row is no sentence
            flat = flat[mask.reshape(-1)]
        flat = flat.to(device=self.sum.device, dtype=self.sum.dtype)
        check_finite(flat, "the calibration activations", module)
        for start in range(0, flat.shape[0], self.chunk_tokens):
            chunk = flat[start:start + self.chunk_tokens]
            self.sum.addmm_(chunk.T, chunk)
        self.sentences += batch
        self.tokens += int(flat.shape[0])

    def hessian(self) -> torch.Tensor:
        """H = 2/N Σ X Xᵀ (zeros if nothing was added)."""
        if self.sentences == 0:
            return self.sum.clone()
        return self.sum * (2.0 / self.sentences)
