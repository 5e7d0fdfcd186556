"""The pair: one stereotypical and one anti-stereotypical text, kept together from file to Hessian.

Fair-GPTQ's term needs X⁰ and X¹ of the *same* pair; the reference pairs sentences by
list position, which silently mis-pairs after any dropped row.  Here a pair is an
object from the moment it is read.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

PARALLEL_KEY = "parallel_id"

@dataclass(frozen=True)
class Pair:
    """stereo / anti texts, bias category, language, and where the pair came from.

    ``source_id`` is stable across runs ("<dataset>:<row or item id>"); ``meta`` holds
    dataset-specific fields an evaluation may need (e.g. StereoSet's target and
    unrelated sentence, CrowS-Pairs' stereo/antistereo direction).
    """

    stereo: str
    anti: str
    category: str
    language: str = "en"
    source_id: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


def split_key(pair: Pair) -> str:
    """The key held-out splits hash: ``meta["parallel_id"]`` where a set marks translations, else the source id.

    Translations of one pair (French CrowS-Pairs row 12 and English row 12, or the same row
    of the 10 gender files) carry the same ``parallel_id``, so a hash split puts all of
    them in the same half and calibration never sees the translation of an evaluated pair.
    """
    return str(pair.meta.get(PARALLEL_KEY) or pair.source_id)


def pairs_hash(pairs: Sequence[Pair]) -> str:
    """Content hash of a pair set (order-sensitive), recorded with every quantized checkpoint."""
    h = hashlib.sha256()
    for p in pairs:
        h.update("\x1f".join((p.stereo, p.anti, p.category, p.language, p.source_id)).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]
