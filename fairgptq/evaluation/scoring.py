"""Batched log-likelihood of continuations: the one scorer behind CrowS-Pairs, StereoSet and zero-shot.

Every likelihood task here reduces to "log p(continuation | context)" summed over the
continuation's tokens, so they share this module instead of each running its own
forward loop.  Tokenisation follows lm-evaluation-harness (``lm_eval.api.model.LM``
and ``HFLM``) exactly, because numbers are only comparable with published ones when the
same tokens are scored:

- an empty context is replaced by the *prefix token* (the tokenizer's BOS, else EOS),
  unless the continuation already starts with it;
- a non-empty context's trailing whitespace moves to the continuation, the pair is
  encoded whole and split at the context's token count (so merges across the boundary
  are scored as lm-eval scores them);
- the tokenizer's own special-token default applies (SmolLM2 adds no BOS, Llama-2 does).

Where the model honours custom attention masks (``supports_packing``), requests are
packed as prefix trees (``packing``): a prefix shared by several requests (the prefix
token, a CrowS-Pairs pair's common beginning, a question repeated for each answer) runs
through the model once, which is exact for a causal LM.  Otherwise batches are
right-padded with an attention mask (right padding keeps the default position ids
correct), one request per row, sorted by length, longest first, so padding is minimal
and an out-of-memory error shows up in the first batch.  Only the positions that predict
continuation tokens go through the LM head when the model accepts ``logits_to_keep``
(transformers' causal LMs do): the vocabulary projection is most of the memory for small
models with large vocabularies.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from ..registry import architectures
from ..core.errors import ConfigError, DataError
from ..core.sequences import Request, encode_request
from .packing import batch_rows, pack_sequences, row_tensors
from .progress import progress_bar

DEFAULT_CONTEXT_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer names one
_CONTEXT_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
DEFAULT_PACK_TOKENS = 128  # prefix-tree row length: long enough to share, short enough that attention stays cheap


@dataclass(frozen=True)
class ContinuationScore:
    """Sum of the continuation tokens' log-probabilities (natural log) and how many tokens there were."""

    logprob: float
    n_tokens: int

    @property
    def mean_logprob(self) -> float:
        """Per-token mean: the log of the geometric-mean token probability (bias-bench's sentence score)."""
        return self.logprob / self.n_tokens


def model_context_length(model) -> int:
    """The model's context window, looked up as lm-eval does (config attributes, then 2048)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in _CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT_LENGTH


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def supports_packing(model) -> bool:
    """Whether the model honours a custom 4D attention mask with explicit position ids.

    True for the registered architectures that declare it (built-in or added by a
    ``fairgptq_architectures`` plugin), under the eager or SDPA attention implementations (flash-attention kernels take no arbitrary masks).
    Anything else is scored in padded rows, which is exact for every causal LM.
    """
    config = getattr(model, "config", None)
    spec = architectures().get(getattr(config, "model_type", None))
    return (spec is not None and spec.tree_attention
            and getattr(config, "_attn_implementation", None) in ("eager", "sdpa")
            and "position_ids" in inspect.signature(model.forward).parameters)


def model_inputs(requests: Sequence[Request], max_len: int) -> list[tuple[int, ...]]:
    """The tokens each request feeds the model: all but the last, left-truncated to the context."""
    inputs = []
    for req in requests:
        if not req.context:
            raise DataError("a request needs at least one context token to condition on (encode_request puts "
                            "the prefix token there when the context is empty)")
        if len(req.continuation) > max_len:
            raise DataError(f"a continuation of {len(req.continuation)} tokens exceeds the model's "
                            f"context of {max_len}")
        inputs.append((req.context + req.continuation)[-(max_len + 1):][:-1])
    return inputs


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) = logit(target) − logsumexp(logits): no vocabulary-sized log_softmax tensor is written."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def padded_batches(inputs: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Request indices, one per row, batched by length, longest first (small padding, early OOM)."""
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def _score_padded(model, requests, inputs, batch_size, keep_logits, device, advance) -> list[ContinuationScore]:
    """One request per row, right-padded (see ``padded_batches``)."""
    scores: list[ContinuationScore | None] = [None] * len(requests)
    for batch in padded_batches(inputs, batch_size):
        lengths = [len(inputs[i]) for i in batch]
        n_cont = [len(requests[i].continuation) for i in batch]
        width = max(lengths)
        # positions whose logits predict a continuation token, as one span covering the batch
        first = min(n - m for n, m in zip(lengths, n_cont))
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        targets = torch.zeros(len(batch), width - first, dtype=torch.long)
        scored = torch.zeros(len(batch), width - first, dtype=torch.bool)
        for r, i in enumerate(batch):
            ids[r, :lengths[r]] = torch.tensor(inputs[i])
            mask[r, :lengths[r]] = 1
            lo = lengths[r] - n_cont[r] - first
            targets[r, lo:lo + n_cont[r]] = torch.tensor(requests[i].continuation)
            scored[r, lo:lo + n_cont[r]] = True
        kwargs = {"logits_to_keep": torch.arange(first, width, device=device)} if keep_logits else {}
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, **kwargs).logits
        if not keep_logits:
            logits = logits[:, first:]
        token_lp = _token_logprobs(logits, targets.to(device))
        sums = torch.where(scored.to(device), token_lp, 0.0).sum(-1).tolist()
        for r, i in enumerate(batch):
            scores[i] = ContinuationScore(sums[r], n_cont[r])
        advance(len(batch))
    return scores  # type: ignore[return-value]


def _score_packed(model, requests, inputs, batch_size, pack_tokens, keep_logits, device,
                  advance) -> list[ContinuationScore]:
    """Prefix-tree rows (see ``packing``): each shared prefix runs once; ``batch_size`` rows per forward."""
    dtype = getattr(model, "dtype", torch.float32)
    scores: list[ContinuationScore | None] = [None] * len(requests)
    for rows in batch_rows(pack_sequences(inputs, pack_tokens), batch_size):
        ids, positions, mask = row_tensors(rows, dtype)
        # (row, node) of every scored position, its target token and the request it belongs to
        row_of, node_of, target_of, owner = [], [], [], []
        for b, row in enumerate(rows):
            for i, path in row.members:
                cont = requests[i].continuation
                row_of += [b] * len(cont)
                node_of += path[len(path) - len(cont):]
                target_of += cont
                owner += [i] * len(cont)
        kept = sorted(set(node_of))
        column = {node: k for k, node in enumerate(kept)}
        kwargs = {"logits_to_keep": torch.tensor(kept, device=device)} if keep_logits else {}
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       use_cache=False, **kwargs).logits
        cols = [column[n] for n in node_of] if keep_logits else node_of
        # one logsumexp per kept node, however many requests share it; then one scalar per scored token
        index = (torch.tensor(row_of, device=device), torch.tensor(cols, device=device))
        lse = torch.logsumexp(logits.float(), dim=-1)[index]
        token_lp = (logits[index + (torch.tensor(target_of, device=device),)].float() - lse).tolist()
        sums = {i: 0.0 for row in rows for i, _ in row.members}
        for i, lp in zip(owner, token_lp):
            sums[i] += lp
        for i, total in sums.items():
            scores[i] = ContinuationScore(total, len(requests[i].continuation))
        advance(len(sums))
    return scores  # type: ignore[return-value]


@torch.inference_mode()
def score_requests(model, requests: Sequence[Request], *, batch_size: int = 16, progress: bool = True,
                   description: str = "scoring", pack: bool | None = None,
                   pack_tokens: int = DEFAULT_PACK_TOKENS) -> list[ContinuationScore]:
    """Log-likelihood of every request's continuation, in the order given.

    Inputs longer than the model's context are left-truncated as lm-eval does (the
    continuation must fit).  ``pack`` (default: when ``supports_packing``) scores requests
    as prefix trees of up to ``pack_tokens`` tokens per row, ``batch_size`` rows per
    forward; unpacked, ``batch_size`` requests per forward.  Results agree across batch
    sizes and packing up to float rounding (padding is masked and sits after every real
    token; a packed node sees exactly the tokens its unpacked position sees).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if pack_tokens < 1:
        raise ConfigError(f"pack_tokens must be >= 1, got {pack_tokens}")
    if pack is None:
        pack = supports_packing(model)
    elif pack and not supports_packing(model):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise ConfigError(f"shared-prefix packing needs a custom-4D-mask-capable model (a table architecture with "
                          f"eager or SDPA attention); {model_type!r} is not one; score with pack=False")
    device = next(model.parameters()).device
    inputs = model_inputs(requests, model_context_length(model))
    keep_logits = _accepts_logits_to_keep(model)
    with progress_bar(len(requests), description, progress) as advance:
        if pack:
            return _score_packed(model, requests, inputs, batch_size, pack_tokens, keep_logits, device, advance)
        return _score_padded(model, requests, inputs, batch_size, keep_logits, device, advance)


def score_sentences(model, tokenizer, sentences: Sequence[str], **kwargs) -> list[ContinuationScore]:
    """Whole-sentence log-likelihoods after the prefix token (lm-eval's empty-context request)."""
    return score_requests(model, [encode_request(tokenizer, "", s) for s in sentences], **kwargs)
