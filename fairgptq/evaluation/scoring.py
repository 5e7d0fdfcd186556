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

Batches are right-padded with an attention mask (right padding keeps the default
position ids correct) and built from requests sorted by length, longest first, so
padding is minimal and an out-of-memory error shows up in the first batch.  Only the
positions that predict continuation tokens go through the LM head when the model
accepts ``logits_to_keep`` (transformers' causal LMs do): the vocabulary projection is
most of the memory for small models with large vocabularies.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.errors import ConfigError, DataError
from .progress import progress_bar

DEFAULT_CONTEXT_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer names one
_CONTEXT_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")


@dataclass(frozen=True)
class Request:
    """Token ids of one (context, continuation); the continuation's tokens are the ones scored."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class ContinuationScore:
    """Sum of the continuation tokens' log-probabilities (natural log) and how many tokens there were."""

    logprob: float
    n_tokens: int

    @property
    def mean_logprob(self) -> float:
        """Per-token mean: the log of the geometric-mean token probability (bias-bench's sentence score)."""
        return self.logprob / self.n_tokens


def prefix_token_id(tokenizer) -> int:
    """The token lm-eval conditions on when the context is empty: BOS, else EOS."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has neither a BOS nor an EOS token to condition an empty context on")
    return tokenizer.eos_token_id


def model_context_length(model) -> int:
    """The model's context window, looked up as lm-eval does (config attributes, then 2048)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in _CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT_LENGTH


def _encode(tokenizer, text: str) -> list[int]:
    """Encode with the tokenizer's special-token default, unless the text already starts with the prefix token."""
    prefix = tokenizer.decode(prefix_token_id(tokenizer))
    kwargs = {"add_special_tokens": False} if text.startswith(prefix) else {}
    return tokenizer.encode(text, **kwargs)


def encode_request(tokenizer, context: str, continuation: str) -> Request:
    """Tokenise a (context, continuation) exactly as lm-eval's ``loglikelihood`` does (see module docstring)."""
    if context == "":
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        if not cont:
            raise DataError(f"the text {continuation!r} tokenises to no tokens; nothing to score")
        prefix = prefix_token_id(tokenizer)
        if cont[0] == prefix:
            return Request(tuple(cont[:1]), tuple(cont[1:]))
        return Request((prefix,), tuple(cont))
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    cont = whole[len(ctx):]
    if not cont:
        raise DataError(f"the continuation {continuation!r} after {context[-40:]!r} tokenises to no tokens")
    return Request(tuple(ctx), tuple(cont))


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.inference_mode()
def score_requests(model, requests: Sequence[Request], *, batch_size: int = 16, progress: bool = True,
                   description: str = "scoring") -> list[ContinuationScore]:
    """Log-likelihood of every request's continuation, in the order given.

    Inputs longer than the model's context are left-truncated as lm-eval does (the
    continuation must fit).  Results agree across batch sizes up to float rounding
    (padding is masked and sits after every real token).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    max_len = model_context_length(model)
    device = next(model.parameters()).device
    keep_logits = _accepts_logits_to_keep(model)
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i].context) + len(requests[i].continuation)))
    scores: list[ContinuationScore | None] = [None] * len(requests)
    with progress_bar(len(requests), description, progress) as advance:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            inputs, n_cont = [], []
            for i in batch:
                req = requests[i]
                if len(req.continuation) > max_len:
                    raise DataError(f"a continuation of {len(req.continuation)} tokens exceeds the model's "
                                    f"context of {max_len}")
                inputs.append((req.context + req.continuation)[-(max_len + 1):][:-1])
                n_cont.append(len(req.continuation))
            lengths = [len(x) for x in inputs]
            width = max(lengths)
            # positions whose logits predict a continuation token, as one span covering the batch
            first = min(n - m for n, m in zip(lengths, n_cont))
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            targets = torch.zeros(len(batch), width - first, dtype=torch.long)
            scored = torch.zeros(len(batch), width - first, dtype=torch.bool)
            for r, (x, i) in enumerate(zip(inputs, batch)):
                ids[r, :len(x)] = torch.tensor(x)
                mask[r, :len(x)] = 1
                lo = len(x) - n_cont[r] - first
                targets[r, lo:lo + n_cont[r]] = torch.tensor(requests[i].continuation)
                scored[r, lo:lo + n_cont[r]] = True
            kwargs = {"logits_to_keep": torch.arange(first, width, device=device)} if keep_logits else {}
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, **kwargs).logits
            if not keep_logits:
                logits = logits[:, first:]
            logits = logits.float()
            # log p(target) = logit(target) - logsumexp(logits): no vocabulary-sized log_softmax tensor is written
            token_lp = logits.gather(-1, targets.to(device)[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            sums = torch.where(scored.to(device), token_lp, 0.0).sum(-1).tolist()
            for r, i in enumerate(batch):
                scores[i] = ContinuationScore(sums[r], n_cont[r])
            advance(len(batch))
    return scores  # type: ignore[return-value]


def score_sentences(model, tokenizer, sentences: Sequence[str], **kwargs) -> list[ContinuationScore]:
    """Whole-sentence log-likelihoods after the prefix token (lm-eval's empty-context request)."""
    return score_requests(model, [encode_request(tokenizer, "", s) for s in sentences], **kwargs)
