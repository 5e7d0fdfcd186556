"""Rows from a dataset hub (``datasets.load_dataset``), shaped like rows read from a local file.

Hub copies store categorical columns as integers (``ClassLabel``); they are turned back
into their names here so the adapters map hub rows and file rows with the same code.
Any failure to reach the hub becomes a DataError that points at the local copy, since
the usual cause is a machine without network.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

from ..contract import DataError
from .validation import RawRow

_OFFLINE_VARS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def hub_source(hub_name: str) -> str:
    """The name bad-row reports use for a hub dataset."""
    return f"hub:{hub_name}"


def hub_rows(hub_name: str, *, config: str | None = None, split: str, local_hint: str) -> Iterator[RawRow]:
    """Rows of ``hub_name`` (line = 1-based row index), ClassLabel ints resolved to names.

    Offline mode (HF_DATASETS_OFFLINE=1) is left to ``datasets``: a cached copy still loads.

    ``local_hint`` tells the user how to use the local copy instead when the hub cannot be reached.
    """
    try:
        from datasets import load_dataset

        dataset = load_dataset(hub_name, config, split=split)
    except Exception as e:  # network, missing dataset, missing package: all end in "use the local file"
        offline = [v for v in _OFFLINE_VARS if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
        why = f"offline mode ({', '.join(offline)} set) and no cached copy" if offline else "no network?"
        raise DataError(f"cannot load {hub_name!r} (config={config!r}, split={split!r}) from the hub: {why} "
                        f"({type(e).__name__}: {e}); {local_hint}") from e
    features = getattr(dataset, "features", None) or {}
    for index, record in enumerate(dataset):
        yield RawRow(index + 1, {k: _decode(features.get(k), v) for k, v in record.items()})


def _decode(feature: Any, value: Any) -> Any:
    """Replace ClassLabel ints by their names, through nested dicts and sequences."""
    names = getattr(feature, "names", None)
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    inner = getattr(feature, "feature", None)  # Sequence / List features
    if isinstance(feature, dict) and isinstance(value, dict):
        return {k: _decode(feature.get(k), v) for k, v in value.items()}
    if inner is not None and isinstance(value, list):
        return [_decode(inner, v) for v in value]
    if isinstance(inner, dict) and isinstance(value, dict):  # Sequence of dicts is stored as a dict of lists
        return {k: [_decode(inner.get(k), x) for x in v] if isinstance(v, list) else v for k, v in value.items()}
    return value
