"""Token-sequence helpers shared by the pair objectives and the evaluation: one tokenisation of a scored text.

``encode_request`` tokenises a (context, continuation) exactly as lm-evaluation-harness does
(see ``fairgptq.evaluation.scoring``), so an objective that scores sentences (likelihood_pairs)
scores the very tokens the CrowS-Pairs evaluation reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import DataError


@dataclass(frozen=True)
class Request:
    """Token ids of one (context, continuation); the continuation's tokens are the ones scored."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]




def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefix_token_id(tokenizer) -> int:
    """The token lm-eval conditions on when the context is empty: BOS, else EOS."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has neither a BOS nor an EOS token to condition an empty context on")
    return tokenizer.eos_token_id


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
