"""CrowS-Pairs (Nangia et al., 2020): minimal pairs across nine bias types.

``sent_more`` becomes ``Pair.stereo`` and ``sent_less`` ``Pair.anti`` as in the
dataset's own scoring (lm-eval ``crows_pairs``: share of pairs where the model prefers
sent_more).  For the ~14 % "antistereo" rows sent_more is the sentence that *violates*
a stereotype about the disadvantaged group; ``meta["direction"]`` keeps that so an
evaluation or a calibration set can treat those rows differently.  The same CSV
layout serves the French CrowS-Pairs (``language="fr"``).
"""
from __future__ import annotations

from pathlib import Path

from .hub import hub_rows, hub_source
from ..contract import Pair
from .reading import delimited_rows, read_text, resolve_path
from .validation import LoadedPairs, RawRow, RowProblem, build_pairs, check_policy, distinct_texts, text_field

DEFAULT_FILE = "crows_pairs/crows_pairs_anonymized.csv"
DIRECTIONS = ("stereo", "antistereo")
_ID_COLUMNS = ("", "id", "Unnamed: 0")  # the original CSV's index column has an empty header


def load_crows_pairs(path: str | Path | None = None, *, language: str = "en", on_bad_row: str = "skip",
                     hub_name: str | None = None) -> LoadedPairs:
    """CrowS-Pairs pairs from the local CSV (default ``data_dir()/crows_pairs/...``) or from ``hub_name``.

    category = bias_type; meta = {"direction": stereo_antistereo, "row": the CSV's row id};
    source_id = "crows_pairs:<row id>".
    """
    check_policy(on_bad_row)
    if hub_name is not None:
        hint = f"use the local CSV instead: load_crows_pairs(path=...) or $FAIRGPTQ_DATA_DIR/{DEFAULT_FILE}"
        rows = hub_rows(hub_name, split="test", local_hint=hint)
        source = hub_source(hub_name)
    else:
        p = resolve_path(path, DEFAULT_FILE)
        source = str(p)
        rows = delimited_rows(read_text(p), ",", source)

    def make_pair(row: RawRow) -> Pair:
        f = row.fields
        stereo, anti = distinct_texts(text_field(f, "sent_more"), text_field(f, "sent_less"))
        direction = text_field(f, "stereo_antistereo").strip()
        if direction not in DIRECTIONS:
            raise RowProblem(f"stereo_antistereo is {direction!r}, expected one of {DIRECTIONS}")
        row_id = _row_id(f, row.line)
        return Pair(stereo, anti, text_field(f, "bias_type").strip(), language, f"crows_pairs:{row_id}",
                    {"direction": direction, "row": row_id})

    return build_pairs(rows, make_pair, source=source, on_bad_row=on_bad_row)


def _row_id(fields, line: int) -> int | str:
    """The row's own id (int when numeric); the file line when the file has no id column."""
    for key in _ID_COLUMNS:
        value = fields.get(key)
        if value is not None and str(value).strip():
            value = str(value).strip()
            return int(value) if value.isdigit() else value
    return line
