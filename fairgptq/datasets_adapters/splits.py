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
#: what a split hashes: each item's split key, or its target term (every item of one term on one side)
SPLIT_BY = ("item", "target")


def in_holdout(source_id: str, fraction: float) -> bool:
    """Deterministic membership of the held-out part: a hash of the id, stable across runs and machines."""
    h = int.from_bytes(hashlib.sha256(source_id.encode("utf-8")).digest()[:8], "big")
    return h / 2.0 ** 64 < fraction


def target_key(pair: Pair) -> str:
    """The key a split by target term hashes: the term, case and spacing folded ("Chess player" = "chess player")."""
    target = pair.meta.get("target")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"pair {pair.source_id!r} has no target term (meta.target), so it cannot be split by "
                          f"target; split_by: target is for StereoSet, whose items name one (use split_by: item)")
    return "target:" + " ".join(target.lower().split())


def split_items(items: Sequence[Pair], split: str, fraction: float, by: str = "item") -> list[Pair]:
    """The ``holdout`` part (≈ ``fraction`` of the items, or of the target terms with ``by="target"``), its
    complement ``calibration``, or ``all``.

    By item id the held-out part shares target terms ("Ethiopian", "chess player") with calibration; by
    target term it asks about terms calibration never saw, the stricter test of how far a step carries.
    """
    if split not in SPLITS:
        raise ConfigError(f"pair split must be one of {SPLITS}, got {split!r}")
    if by not in SPLIT_BY:
        raise ConfigError(f"split_by must be one of {SPLIT_BY}, got {by!r}")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout_fraction must be in (0, 1), got {fraction}")
    if split == "all":
        return list(items)
    key = split_key if by == "item" else target_key
    held = [in_holdout(key(p), fraction) for p in items]
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
