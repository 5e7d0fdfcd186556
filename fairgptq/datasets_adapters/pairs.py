"""The pair: one stereotypical and one anti-stereotypical text, kept together from file to Hessian.

Fair-GPTQ's term needs X⁰ and X¹ of the *same* pair; the reference pairs sentences by
list position, which silently mis-pairs after any dropped row.  Here a pair is an
object from the moment it is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


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
