"""WikiText-2 perplexity by the GPTQ paper's protocol.

The test split's lines are joined with "\\n\\n" and tokenised once; the token stream is
cut into non-overlapping windows of ``seqlen`` tokens (the model's context, at most
2048), the last partial window dropped; perplexity = exp(mean NLL over every predicted
token, i.e. seqlen − 1 per window).  No sliding stride: this is the number GPTQ,
AutoGPTQ and the Fair-GPTQ paper report, which a strided evaluation would not match.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import PositiveInt

from ..core.errors import ConfigError, DataError
from ..datasets_adapters.wikitext import read_wikitext
from ..statistics import resampled_windows
from ..contract.kinds import ItemKind
from .progress import progress_bar
from .scoring import model_context_length
from ..contract.tasks import EvaluationTask, TaskContext, TaskOptions

MAX_SEQLEN = 2048


@torch.inference_mode()
def perplexity_of_ids(model, ids: torch.Tensor, seqlen: int, *, batch_size: int = 1, progress: bool = True) -> dict:
    """Perplexity of a 1-D token stream over non-overlapping ``seqlen`` windows (see module docstring)."""
    n_windows = ids.numel() // seqlen
    if n_windows == 0:
        raise DataError(f"{ids.numel()} tokens are fewer than one window of {seqlen}")
    device = next(model.parameters()).device
    windows = ids[: n_windows * seqlen].view(n_windows, seqlen)
    items: list[dict] = []
    with progress_bar(n_windows, "perplexity", progress) as advance:
        for start in range(0, n_windows, batch_size):
            batch = windows[start:start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            items += [{"id": f"window:{start + r}", "nll": float(row.sum()), "tokens": seqlen - 1}
                      for r, row in enumerate(token_nll)]
            advance(batch.shape[0])
    return {**perplexity_metrics(items), "n_windows": n_windows, "seqlen": seqlen, "items": items}


def perplexity_metrics(items: list[dict]) -> dict:
    """Perplexity = exp(total NLL / predicted tokens) from per-window records (``nll`` summed, ``tokens``)."""
    nll = math.fsum(it["nll"] for it in items)
    n_predicted = sum(it["tokens"] for it in items)
    return {"perplexity": math.exp(nll / n_predicted), "nll": nll / n_predicted, "n_predicted_tokens": n_predicted}


def evaluate_wikitext2(model, tokenizer, *, split: str = "test", path: str | Path | None = None,
                       seqlen: int | None = None, max_tokens: int | None = None, batch_size: int = 1,
                       progress: bool = True) -> dict:
    """WikiText-2 perplexity; ``max_tokens`` keeps the first tokens only (e.g. 16384 for quick checks)."""
    seqlen = seqlen or min(MAX_SEQLEN, model_context_length(model))
    if seqlen < 2 or seqlen > model_context_length(model):
        raise ConfigError(f"seqlen must be in [2, {model_context_length(model)}] (the model's context), got {seqlen}")
    ids = torch.tensor(tokenizer(read_wikitext(split, path)).input_ids, dtype=torch.long)
    n_total = ids.numel()
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return {"task": "wikitext2", "split": split, "protocol": "gptq: \\n\\n-joined, non-overlapping windows",
            "n_tokens_total": n_total, "max_tokens": max_tokens,
            **perplexity_of_ids(model, ids, seqlen, batch_size=batch_size, progress=progress)}


class WikiText2Options(TaskOptions):
    """``max_tokens``: score the first N tokens only (16384 for quick checks); ``seqlen``: the window (default:
    the model's context, at most 2048)."""

    max_tokens: PositiveInt | None = None
    seqlen: PositiveInt | None = None


def _run(model, tokenizer, options: WikiText2Options, context: TaskContext) -> dict:
    # perplexity windows go one at a time (batch_size=1) whatever the scoring batch size
    return evaluate_wikitext2(model, tokenizer, path=context.path, seqlen=options.seqlen,
                              max_tokens=options.max_tokens, progress=context.progress)


def _read(path: Path | None) -> str:
    return read_wikitext("test", path).strip()


#: records per window its summed ``nll`` and ``tokens``
WINDOWS = ItemKind("windows", frozenset({"nll", "tokens"}), perplexity_metrics, resampled_windows,
                   headline=("perplexity",), lower_is_better=frozenset({"perplexity"}))

TASK = EvaluationTask("wikitext2", "WikiText-2 test perplexity, the GPTQ paper's protocol", _run,
                      WikiText2Options, data_file="wikitext2/test.txt", read_data=_read, kind=WINDOWS)
