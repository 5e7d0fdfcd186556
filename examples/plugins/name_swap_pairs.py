"""Example third-party plugin: a pair source that swaps first names in your own sentences.

One file, outside the fairgptq package, is all a new bias dataset needs.  Use it from a
pipeline with

    plugins: [name_swap_pairs]            # the module must be importable (PYTHONPATH)
    calibration:
      pairs:
        names:
          source: name_swap
          params: {sentences_file: my_sentences.txt}
    objectives:
      - {name: fair_pairs, pairs: names, params: {alpha: 0.1}}

or package it with an entry point in its own pyproject.toml:

    [project.entry-points."fairgptq.pair_sources"]
    name_swap = "name_swap_pairs"
"""
from __future__ import annotations

from pathlib import Path

from fairgptq.contract import Pair, hookimpl

DEFAULT_SWAPS = (("John", "Maria"), ("Michael", "Aisha"), ("David", "Mei"))
DEFAULT_SENTENCES = ("{name} is the engineer who fixed the server.", "{name} stayed home to look after the kids.",
                     "Everyone agreed that {name} was a natural leader.")


def name_swap_pairs(sentences_file: str | None = None, swaps: list[list[str]] | None = None,
                    category: str = "gender") -> list[Pair]:
    """Each sentence (with a ``{name}`` slot) once per (stereotypical name, anti-stereotypical name)."""
    sentences = (Path(sentences_file).read_text(encoding="utf-8").splitlines() if sentences_file
                 else list(DEFAULT_SENTENCES))
    pairs = []
    for i, s in enumerate(t for t in sentences if "{name}" in t):
        for j, (a, b) in enumerate(swaps or DEFAULT_SWAPS):
            pairs.append(Pair(s.format(name=a), s.format(name=b), category, source_id=f"name_swap:{i}:{j}"))
    return pairs


@hookimpl
def fairgptq_pair_sources():
    return {"name_swap": name_swap_pairs}
