"""WikiText-2 text for calibration windows (GPTQ's recipe) and for perplexity."""
from __future__ import annotations

from pathlib import Path

import torch

from ..contract import DataError, TokenBatch
from .data_location import DATA_DIR_ENV, data_dir, data_path

__all__ = ["DATA_DIR_ENV", "data_dir", "read_wikitext", "calibration_windows"]


def read_wikitext(split: str = "test", path: str | Path | None = None) -> str:
    """The split's text joined with "\\n\\n" (the GPTQ paper's protocol joins the dataset rows so)."""
    p = Path(path) if path else data_path(f"wikitext2/{split}.txt")
    if not p.is_file():
        raise DataError(f"WikiText-2 file {p} not found; give the path of an existing file")
    lines = p.read_text(encoding="utf-8").split("\n")
    return "\n\n".join(lines)


def calibration_windows(tokenizer, n: int = 64, seqlen: int = 512, seed: int = 0, split: str = "valid",
                        batch_size: int = 8, path: str | Path | None = None) -> list[TokenBatch]:
    """n random windows of seqlen tokens from WikiText-2 (GPTQ's calibration recipe), batched.

    >>> from fairgptq import calibration_windows, load_model
    >>> model, tok = load_model(MODEL)
    >>> windows = calibration_windows(tok, n=4, seqlen=32, batch_size=2)
    >>> len(windows), tuple(windows[0].input_ids.shape)
    (2, (2, 32))
    """
    ids = tokenizer(read_wikitext(split, path), return_tensors="pt").input_ids[0]
    if ids.numel() <= seqlen:
        raise DataError(f"WikiText-2 {split} has {ids.numel()} tokens, fewer than one window of {seqlen}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seqlen - 1, (n,), generator=g)
    windows = torch.stack([ids[s:s + seqlen] for s in starts.tolist()])
    return [TokenBatch(windows[i:i + batch_size], torch.ones_like(windows[i:i + batch_size]))
            for i in range(0, n, batch_size)]
