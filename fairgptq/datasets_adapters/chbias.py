"""CHBias (Zhao et al., ACL 2023): Chinese Weibo posts about a group and their group-swapped copies.

The set has no pair file: row i of a group's file (``gender_female``) is paired with row
i of its counterpart's file (``gender_male``), whose post is the same text with the
group terms swapped.  Each category has a test part (CSV: index, replaced_sentence)
and a valid part (one post a line, CRLF line ends).  The posts name the first group in
the biased form, so that side is ``Pair.stereo``.  Some automatic swaps changed
nothing: those identical pairs are bad rows (dropped and counted), and files of
different lengths are refused rather than silently mis-paired.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..contract import DataError, Pair
from .reading import delimited_rows, read_text, resolve_path
from .validation import LoadedPairs, RawRow, build_pairs, check_policy, choose, distinct_texts, text_field
from .data_location import expected_path

DEFAULT_DIR = "chbias"
# category -> (the group the biased posts are about, the counterpart group)
CATEGORIES: dict[str, tuple[str, str]] = {"gender": ("female", "male"), "orientation": ("lgbt", "straight"),
                                          "age": ("old", "young"), "appearance": ("fat", "slim")}
PARTS = ("test", "valid")


def load_chbias(path: str | Path | None = None, *, categories: Iterable[str] | None = None,
                parts: Iterable[str] = PARTS, on_bad_row: str = "skip") -> LoadedPairs:
    """CHBias pairs from the folder ``path`` (default ``data_dir()/chbias``).

    category = the CHBias category; language "zh"; source_id = "chbias:<category>:<part>:<row>"
    (row 0-based, as the CSV's index); meta = {"part", "row", "groups": (stereo group, anti group)}.
    """
    check_policy(on_bad_row)
    wanted = choose(categories, tuple(CATEGORIES), "category", "CHBias")
    chosen_parts = choose(parts, PARTS, "part", "CHBias")
    folder = Path(path).expanduser() if path is not None else None
    pairs: list[Pair] = []
    bad_rows = []
    for category in wanted:
        for part in chosen_parts:
            source, rows = _paired_rows(folder, category, part)

            def make_pair(row: RawRow, category: str = category, part: str = part) -> Pair:
                f = row.fields
                stereo, anti = distinct_texts(text_field(f, "stereo"), text_field(f, "anti"))
                return Pair(stereo, anti, category, "zh", f"chbias:{category}:{part}:{f['row']}",
                            {"part": part, "row": f["row"], "groups": CATEGORIES[category]})

            loaded = build_pairs(rows, make_pair, source=source, on_bad_row=on_bad_row)
            pairs += loaded
            bad_rows += loaded.bad_rows
    return LoadedPairs(pairs, bad_rows, str(folder if folder is not None else resolve_dir()))


def resolve_dir() -> Path:
    """The default CHBias folder (``chbias`` in the data locations, :mod:`.data_location`)."""
    return expected_path(DEFAULT_DIR)


def _paired_rows(folder: Path | None, category: str, part: str) -> tuple[str, list[RawRow]]:
    """Row i of the biased group's file beside row i of the counterpart's.

    The source names both files; a row's ``line`` is its 1-based post number in them.
    """
    (first_name, first), (second_name, second) = (_posts(folder, f"{category}_{group}", part)
                                                  for group in CATEGORIES[category])
    if len(first) != len(second):
        raise DataError(f"CHBias {category} {part}: {first_name} has {len(first)} posts and {second_name} "
                        f"{len(second)}; rows pair by position, so the files must have the same length")
    rows = [RawRow(i + 1, {"stereo": a, "anti": b, "row": i}) for i, (a, b) in enumerate(zip(first, second))]
    return f"{first_name} ~ {Path(second_name).name} (post number)", rows


def _posts(folder: Path | None, stem: str, part: str) -> tuple[str, list[str]]:
    relative = f"{DEFAULT_DIR}/{stem}_{part}.{'csv' if part == 'test' else 'txt'}"
    p = resolve_path(folder / Path(relative).name if folder is not None else None, relative)
    text = read_text(p)
    if part == "test":
        posts = []
        for row in delimited_rows(text, ",", str(p)):
            if row.fields is None or "replaced_sentence" not in row.fields:
                raise DataError(f"{p}:{row.line}: {row.problem or 'no replaced_sentence column'}; the CHBias test "
                                "CSV has the columns index, replaced_sentence")
            posts.append(row.fields["replaced_sentence"])
        return str(p), posts
    # valid: one post a line, CRLF; a final line break ends the last post, it does not add an empty one
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return str(p), lines
