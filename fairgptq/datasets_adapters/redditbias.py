"""RedditBias (Barikeri et al., ACL 2021): Reddit phrases in five bias dimensions, as two kinds of pairs.

- ``target_swap``: row i of the marginalised group's ``*_biased_{test,valid}_reduced.csv``
  (its ``comments_processed`` phrase) against row i of the counterpart group's file, whose
  ``comments`` column repeats that phrase and ``comments_processed`` has the group terms
  swapped ("my girlfriend is ..." / "my boyfriend is ...").
- ``attribute_swap``: the marginalised group's ``*_phrase_biased_testset_neg_attr_reduced.csv``
  against ``*_phrase_unbiased_testset_pos_attr_reduced.csv``: the same phrase with the
  stereotypical attribute replaced by a positive one.

The biased phrase is ``Pair.stereo``.  Both kinds start from the same biased phrases, so
a pair's split key (``meta["parallel_id"]``) is its phrase: a held-out half of target
swaps and one of attribute swaps never share a phrase with the other's calibration half.  Rows pair by position, so each row is checked:
the counterpart's ``comments`` must equal the biased phrase, otherwise the row is a bad
row (the files drifted) rather than a mis-paired pair.  Swaps that changed nothing are
identical pairs and dropped (counted in ``bad_rows``).  The phrases are short lowercase
windows and offensive by design.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..contract import ConfigError, DataError, PARALLEL_KEY, Pair
from .reading import delimited_rows, read_text, resolve_path
from .validation import (LoadedPairs, RawRow, RowProblem, build_pairs, check_policy, choose, distinct_texts,
                         text_field)
from .data_location import expected_path

DEFAULT_DIR = "redditbias"
# dimension -> (bias type, marginalised group, counterpart group), as the files name them
DIMENSIONS: dict[str, tuple[str, str, str]] = {
    "gender": ("gender", "female", "male"), "orientation": ("orientation", "lgbtq", "straight"),
    "race": ("race", "black", "white"), "religion1": ("religion", "jews", "christians"),
    "religion2": ("religion", "muslims", "christians")}
KINDS = ("target_swap", "attribute_swap")
PARTS = ("test", "valid")


def load_redditbias(path: str | Path | None = None, *, kind: str = "target_swap",
                    dimensions: Iterable[str] | None = None, parts: Iterable[str] = PARTS,
                    on_bad_row: str = "skip") -> LoadedPairs:
    """RedditBias pairs of one ``kind`` from the folder ``path`` (default ``data_dir()/redditbias``).

    category = the bias type (both religion dimensions are "religion"); source_id =
    "redditbias:<kind>:<dimension>:<part>:<row>"; meta = {"dimension", "groups", "part", "row", "parallel_id"}.
    ``parts`` applies to target swaps (attribute swaps exist for the test part only).
    """
    check_policy(on_bad_row)
    if kind not in KINDS:
        raise ConfigError(f"RedditBias kind must be one of {KINDS}, got {kind!r}")
    chosen = choose(dimensions, tuple(DIMENSIONS), "dimension", "RedditBias")
    chosen_parts = choose(parts, PARTS, "part", "RedditBias") if kind == "target_swap" else ("test",)
    folder = Path(path).expanduser() if path is not None else expected_path(DEFAULT_DIR)
    pairs: list[Pair] = []
    bad_rows = []
    for dimension in chosen:
        for part in chosen_parts:
            first, second = _file_names(kind, dimension, part)
            rows = _paired_rows(folder, first, second)
            source = f"{folder / first} ~ {second}"

            def make_pair(row: RawRow, dimension: str = dimension, part: str = part) -> Pair:
                a, b = row.fields["a"], row.fields["b"]
                phrase = text_field(a, "comments_processed")
                if text_field(b, "comments").strip() != phrase.strip():
                    raise RowProblem(f"the counterpart row's comments {b['comments']!r} is not this row's phrase "
                                     f"{phrase!r}: the two files are not aligned here")
                stereo, anti = distinct_texts(phrase, text_field(b, "comments_processed"))
                bias_type, *groups = DIMENSIONS[dimension]
                return Pair(stereo, anti, bias_type, "en", f"redditbias:{kind}:{dimension}:{part}:{row.fields['row']}",
                            {"dimension": dimension, "groups": tuple(groups), "part": part, "row": row.fields["row"],
                             PARALLEL_KEY: f"redditbias:{dimension}:{phrase.strip()}"})

            loaded = build_pairs(rows, make_pair, source=source, on_bad_row=on_bad_row)
            pairs += loaded
            bad_rows += loaded.bad_rows
    return LoadedPairs(pairs, bad_rows, str(folder))


def _file_names(kind: str, dimension: str, part: str) -> tuple[str, str]:
    """(biased file, counterpart file) of one dimension and part."""
    _, marginalised, counterpart = DIMENSIONS[dimension]
    stem = f"reddit_comments_{dimension}"
    if kind == "target_swap":
        return (f"{stem}_{marginalised}_biased_{part}_reduced.csv", f"{stem}_{counterpart}_biased_{part}_reduced.csv")
    phrase = f"{stem}_{marginalised}_processed_phrase"
    return f"{phrase}_biased_testset_neg_attr_reduced.csv", f"{phrase}_unbiased_testset_pos_attr_reduced.csv"


def _paired_rows(folder: Path, first: str, second: str) -> list[RawRow]:
    """Row i of both files (``line`` = the first file's line); unequal lengths are refused."""
    sides = []
    for name in (first, second):
        p = resolve_path(folder / name, f"{DEFAULT_DIR}/{name}")
        sides.append(list(delimited_rows(read_text(p), ",", str(p))))
    a_rows, b_rows = sides
    if len(a_rows) != len(b_rows):
        raise DataError(f"RedditBias: {first} has {len(a_rows)} rows and {second} {len(b_rows)}; rows pair by "
                        "position, so the files must have the same length")
    out = []
    for i, (a, b) in enumerate(zip(a_rows, b_rows)):
        problem = a.problem or b.problem
        out.append(RawRow(a.line, None if problem else {"a": a.fields, "b": b.fields, "row": i}, problem))
    return out
