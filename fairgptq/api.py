"""The whole-model API in one import: load, calibrate, quantize (with objectives), export, reload, evaluate.

    from fairgptq import load_model, quantize_model, LikelihoodPairObjective, calibration_windows, load_pairs
    model, tok = load_model("smollm2")
    objective = LikelihoodPairObjective(load_pairs("stereoset", split="calibration", n=256), target=1.0, metric="identity")
    result = quantize_model(model, calibration_windows(tok, n=64), QuantConfig(bits=4), objectives=[objective], tokenizer=tok)
    export_checkpoint(model, tok, result, "out/model")        # then load_gptq_checkpoint("out/model"), evaluate(...)

Calibration is a list of :class:`TokenBatch`: :func:`calibration_windows` (WikiText-2, GPTQ's recipe)
or :func:`text_batches` (your own strings or a ``datasets.Dataset``).  Each function's docstring
example runs in the test suite (tests/test_docs.py) with ``MODEL`` a tiny model folder and ``OUT``
a fresh folder.

:func:`quantize_model` here is the core driver's with the registry's model families (plugins'
included); :func:`export_checkpoint` snaps the scales to the checkpoint's float16 first, so what
is written is exactly the model in memory afterwards.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from .core import driver
from .core.backend import Backend
from .core.errors import ConfigError
from .core.objective import Objective, TokenBatch
from .core.quantizer import QuantConfig
from .registry import Registry, default_registry


def quantize_model(model: nn.Module, calibration: list[TokenBatch] | None, config: QuantConfig, *,
                   objectives: Iterable[Objective] = (), tokenizer=None, roles: Iterable[str] | None = None,
                   progress: bool = True, backend: Backend | None = None,
                   registry: Registry | None = None) -> driver.QuantizationResult:
    """Quantize every linear of ``model`` in place, layer by layer, with ``objectives``' terms; returns the reports.

    :func:`fairgptq.core.driver.quantize_model` on the families ``registry`` knows (default: the
    process-wide one, plugins' families included): the core driver takes its table of families as an
    argument so that the core imports nothing outside itself.

    >>> from fairgptq import QuantConfig, load_model, quantize_model, text_batches
    >>> model, tok = load_model(MODEL)
    >>> calibration = text_batches(tok, ["the man was very kind and the woman was smart"] * 8)
    >>> result = quantize_model(model, calibration, QuantConfig(bits=4, group_size=32), progress=False)
    >>> len(result.reports), sorted({report.role for report in result.reports})   # 2 layers x 7 linears
    (14, ['attn_out', 'attn_qkv', 'mlp_in', 'mlp_out'])
    """
    return driver.quantize_model(model, calibration, config, objectives=objectives, tokenizer=tokenizer, roles=roles,
                                 progress=progress, backend=backend,
                                 architectures=(registry or default_registry()).architectures())


def export_checkpoint(model: nn.Module, tokenizer, result: driver.QuantizationResult, out_dir: str | Path, *,
                      dtype: torch.dtype | None = None, **options: Any) -> dict:
    """Snap ``model`` and ``result`` to the checkpoint's precision, then write the GPTQ checkpoint; returns its config.

    Scales go to float16 and the unquantized tensors to the storage ``dtype`` (default float16), in
    place, so the model in memory is afterwards exactly the one on disk.  ``options`` go to
    :func:`fairgptq.export.export_checkpoint` (``checkpoint_format``, ``fairgptq_meta``).

    >>> from fairgptq import QuantConfig, export_checkpoint, load_model, quantize_model, text_batches
    >>> model, tok = load_model(MODEL)
    >>> result = quantize_model(model, text_batches(tok, ["he is a good doctor"] * 4), QuantConfig(group_size=32),
    ...                         progress=False)
    >>> config = export_checkpoint(model, tok, result, f"{OUT}/model")
    >>> from pathlib import Path
    >>> config["bits"], config["group_size"], sorted(p.name for p in Path(OUT, "model").glob("*.safetensors"))
    (4, 32, ['model.safetensors'])
    """
    from .export import export_checkpoint as write, snap_to_checkpoint_precision
    from .export.gptq_format import STORAGE_DTYPE
    dtype = dtype or STORAGE_DTYPE
    snap_to_checkpoint_precision(model, result, dtype)
    return write(model, tokenizer, result, out_dir, dtype=dtype, **options)


def load_pairs(source: str = "stereoset", *, split: str = "all", n: int | None = None, seed: int = 0,
               holdout_fraction: float = 0.5, registry: Registry | None = None, **params: Any) -> list:
    """A pair set as a pipeline builds one: a pair-source plugin's pairs, a split, a deterministic sample.

    ``split`` is ``all``, ``calibration`` or ``holdout`` (the halves a held-out evaluation keeps apart);
    ``params`` are the source's own settings (``fairgptq plugins`` lists them).

    >>> from fairgptq import load_pairs
    >>> pairs = load_pairs("stereoset", split="calibration", n=8, seed=0)
    >>> len(pairs), pairs[0] == load_pairs("stereoset", split="calibration", n=8, seed=0)[0]
    (8, True)
    """
    from .datasets_adapters.sampling import pair_subset
    loaded = (registry or default_registry()).create("pair_sources", source, **params)
    return list(pair_subset(loaded, split, holdout_fraction, n, seed))


def text_batches(tokenizer, texts: Sequence[str] | Any, *, column: str = "text", batch_size: int = 8,
                 max_length: int = 512) -> list[TokenBatch]:
    """Calibration batches from your own strings, or from one column of a ``datasets.Dataset``.

    Each text is tokenised on its own (cut at ``max_length`` tokens) and the batches are right-padded,
    so pad positions never enter H.  Blank texts are left out: a corpus read line by line (WikiText's
    rows) has many, and an empty row adds nothing to H but a batch slot.

    >>> from fairgptq import load_model, text_batches
    >>> model, tok = load_model(MODEL)
    >>> batches = text_batches(tok, ["the nurse was kind", "", "he is a good doctor"], batch_size=8)
    >>> len(batches), tuple(batches[0].input_ids.shape) == tuple(batches[0].attention_mask.shape)
    (1, True)
    >>> from datasets import Dataset
    >>> len(text_batches(tok, Dataset.from_dict({"text": ["the man was smart"] * 10}), batch_size=4))
    3
    """
    from .contract.tokens import text_batches as tokenised
    if hasattr(texts, "column_names"):  # a datasets.Dataset: read one column
        if column not in texts.column_names:
            raise ConfigError(f"the dataset has no column {column!r} (it has {', '.join(texts.column_names)}); "
                              f"pass column=")
        texts = texts[column]
    if isinstance(texts, str):
        raise ConfigError("text_batches takes a list of texts, not one string: wrap it in a list")
    kept = [t for t in texts if isinstance(t, str) and t.strip()]
    if not kept:
        raise ConfigError("text_batches: no non-blank text to calibrate on")
    return tokenised(tokenizer, kept, batch_size=batch_size, max_length=max_length)
