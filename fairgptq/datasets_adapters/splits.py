"""Held-out splits of a pair set, and the overlap between evaluated pairs and calibration: for every pair source.

A pipeline calibrates on one part of a file and evaluates on the other (``split: calibration`` /
``holdout``); the part is chosen by a hash of each pair's split key, so it is the same on every run
and machine, and translations of one pair (a shared ``parallel_id``) fall in the same part.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from ..contract import ConfigError, Pair, split_key

SPLITS = ("all", "holdout", "calibration")


def in_holdout(source_id: str, fraction: float) -> bool:
    """Deterministic membership of the held-out part: a hash of the id, stable across runs and machines."""
    h = int.from_bytes(hashlib.sha256(source_id.encode("utf-8")).digest()[:8], "big")
    return h / 2.0 ** 64 < fraction


def split_items(items: Sequence[Pair], split: str, fraction: float) -> list[Pair]:
    """The ``holdout`` part (≈ ``fraction`` of the items), its complement ``calibration``, or ``all``."""
    if split not in SPLITS:
        raise ConfigError(f"pair split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout_fraction must be in (0, 1), got {fraction}")
    if split == "all":
        return list(items)
    held = [in_holdout(split_key(p), fraction) for p in items]
    calibration = [p for p, h in zip(items, held) if not h]
    if split == "calibration":
        return calibration
    # StereoSet repeats some sentences under other ids (6 of the 1077 held-out dev items repeat a
    # calibration-half sentence).  Those items leave the holdout rather than the calibration half,
    # so every calibration sample, and every number built on one, stays what it was.
    seen = {t.strip() for p in calibration for t in (p.stereo, p.anti)}
    return [p for p, h in zip(items, held) if h and p.stereo.strip() not in seen and p.anti.strip() not in seen]


def find_overlap(items: Sequence[Pair], calibration: Iterable[Pair | str]) -> list[str]:
    """Source ids of evaluated items that share an id or a sentence with the calibration set.

    ``calibration`` may mix Pair objects, source ids and raw texts: texts matter because the
    calibration sentences themselves build the Hessians, whatever file they came from.
    """
    ids: set[str] = set()
    texts: set[str] = set()
    for c in calibration:
        if isinstance(c, Pair):
            if c.source_id:
                ids.add(c.source_id)
            texts.update((c.stereo.strip(), c.anti.strip()))
        else:
            ids.add(c)
            texts.add(c.strip())
    return [p.source_id for p in items
            if p.source_id in ids or p.stereo.strip() in texts or p.anti.strip() in texts]
