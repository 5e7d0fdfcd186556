"""HolisticBias (Smith et al., EMNLP 2022) descriptor swaps: pairs built from descriptors x templates.

HolisticBias has no stereotype / anti-stereotype pairs, only identity descriptors in 13
axes (each axis split into buckets: "age": child, young, old, ...) and sentence
templates.  A pair here is one template and one noun filled with two descriptors of the
same axis from different buckets ("I'm a Deaf person." / "I'm a blind person."), so the
pair differs in the group and nothing else.  Which side is ``stereo`` carries no
stereotype meaning (Fair-GPTQ's H_bias uses D·Dᵀ, which is sign-free); it is the first
descriptor in the file's order.

Sampling is deterministic: ``n_per_axis`` pairs per axis, drawn with a PRNG seeded by
(seed, axis), so a pair set is the same on every machine and run.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..contract import ConfigError, DataError, Pair
from .reading import read_text, resolve_path
from .validation import LoadedPairs
from .data_location import expected_path

DEFAULT_DIR = "holistic_bias"
DEFAULT_NOUNS = (("person", "people"),)
_VOWELS = "aeiouAEIOU"


def load_holistic_bias(path: str | Path | None = None, *, axes: Iterable[str] | None = None,
                       n_per_axis: int = 64, seed: int = 0, nouns: Sequence[Sequence[str]] = DEFAULT_NOUNS,
                       include_dispreferred: bool = False) -> LoadedPairs:
    """Descriptor-swap pairs from the folder ``path`` (default ``data_dir()/holistic_bias``).

    category = the axis; source_id = "holistic_bias:<axis>:<template #>:<descriptor a>|<descriptor b>:<noun>";
    meta = {"axis", "buckets", "descriptors", "template"}.  ``nouns`` are (singular, plural)
    person nouns; ``include_dispreferred`` keeps descriptors the dataset marks as dispreferred.
    """
    if n_per_axis < 1:
        raise ConfigError(f"n_per_axis must be >= 1, got {n_per_axis}")
    nouns = [tuple(n) for n in nouns]
    if not nouns or any(len(n) != 2 or not all(isinstance(w, str) and w.strip() for w in n) for n in nouns):
        raise ConfigError(f"nouns must be (singular, plural) word pairs, got {nouns!r}")
    folder = Path(path).expanduser() if path is not None else None
    descriptors = _read_json(folder, "descriptors.json")
    templates = list(_read_json(folder, "sentence_templates.json"))
    chosen = list(descriptors) if axes is None else ([axes] if isinstance(axes, str) else list(axes))
    unknown = [a for a in chosen if a not in descriptors]
    if unknown or not chosen:
        raise ConfigError(f"HolisticBias axes {unknown or chosen} unknown or empty; choose from {sorted(descriptors)}")
    pairs: list[Pair] = []
    for axis in chosen:
        by_bucket = _descriptors(descriptors[axis], include_dispreferred)
        flat = [(bucket, d) for bucket, ds in by_bucket.items() for d in ds]
        if len(by_bucket) < 2:
            continue  # one bucket ("religion": all) has no cross-bucket swap; "nonce" words are not groups
        rng = random.Random(f"holistic_bias:{seed}:{axis}")
        seen: set[tuple[int, int, int, int]] = set()
        for _ in range(100 * n_per_axis):
            if len(seen) == n_per_axis:
                break
            i, j = sorted(rng.sample(range(len(flat)), 2))
            t, k = rng.randrange(len(templates)), rng.randrange(len(nouns))
            if flat[i][0] == flat[j][0] or (i, j, t, k) in seen:
                continue
            seen.add((i, j, t, k))
            (bucket_a, a), (bucket_b, b) = flat[i], flat[j]
            template = templates[t]
            pairs.append(Pair(_fill(template, a, nouns[k]), _fill(template, b, nouns[k]), axis, "en",
                              f"holistic_bias:{axis}:{t}:{a}|{b}:{nouns[k][0]}",
                              {"axis": axis, "buckets": (bucket_a, bucket_b), "descriptors": (a, b),
                               "template": template}))
    if not pairs:
        raise DataError(f"HolisticBias axes {chosen} give no descriptor swaps (each needs two buckets)")
    return LoadedPairs(pairs, (), str(folder if folder is not None else expected_path(DEFAULT_DIR)))


def _read_json(folder: Path | None, name: str) -> Any:
    p = resolve_path(folder / name if folder is not None else None, f"{DEFAULT_DIR}/{name}")
    try:
        return json.loads(read_text(p))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None


def _descriptors(axis: Any, include_dispreferred: bool) -> dict[str, list[str]]:
    """bucket -> descriptor words; an entry is a word or {"descriptor", "preference"}."""
    buckets = axis if isinstance(axis, dict) else {"all": axis}
    out: dict[str, list[str]] = {}
    for bucket, entries in buckets.items():
        words = []
        for e in entries:
            word, preference = (e, None) if isinstance(e, str) else (e.get("descriptor"), e.get("preference"))
            if isinstance(word, str) and word.strip() and (include_dispreferred or preference != "dispreferred"):
                words.append(word.strip())
        if words:
            out[bucket] = words
    return out


def _fill(template: str, descriptor: str, noun: tuple[str, str]) -> str:
    """The template with "a/an <descriptor> <noun>" (or the plural) in its noun-phrase slot."""
    article = "an" if descriptor[0] in _VOWELS else "a"
    return template.format(noun_phrase=f"{article} {descriptor} {noun[0]}", plural_noun_phrase=f"{descriptor} {noun[1]}")
