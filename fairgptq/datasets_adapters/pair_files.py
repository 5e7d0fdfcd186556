"""User pair files (JSONL, JSON array, CSV, TSV) with a column mapping.

The way in for any pair set without its own adapter: multilingual sets (French
CrowS-Pairs with ``language="fr"``), narrative / long-context story pairs, or a team's
own sentences.  Columns that are not mapped stay in ``meta["columns"]`` so nothing the
file carries is lost on the way to an evaluation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..contract import ConfigError, PARALLEL_KEY, Pair
from .hub import hub_rows, hub_source
from .reading import FORMATS, delimited_rows, json_array_rows, jsonl_rows, read_text, resolve_path
from .validation import LoadedPairs, RawRow, RowProblem, build_pairs, check_policy, distinct_texts, text_field


def load_pair_file(path: str | Path | None = None, *, stereo_col: str = "stereo", anti_col: str = "anti",
                   category_col: str | None = None, language: str = "en", default_category: str = "unknown",
                   id_col: str | None = None, fmt: str | None = None, on_bad_row: str = "skip",
                   hub_name: str | None = None, hub_config: str | None = None,
                   hub_split: str = "train", parallel_prefix: str | None = None) -> LoadedPairs:
    """Pairs from a local file (``fmt`` inferred from the suffix) or from ``hub_name``.

    category = the ``category_col`` value, else ``default_category``; source_id =
    "<file stem or hub name>:<id_col value or line>"; meta = {"line", "columns": unmapped columns}.

    ``parallel_prefix`` marks translations: meta["parallel_id"] = "<prefix><id_col value>", so
    held-out splits keep every language's version of one pair in the same half (see
    :func:`~fairgptq.contract.pairs.split_key`).  It needs ``id_col``.
    """
    check_policy(on_bad_row)
    if parallel_prefix is not None and id_col is None:
        raise ConfigError("parallel_prefix needs id_col: the column whose value is shared by the translations "
                          "of one pair (e.g. id_col: ID for the CrowS-Pairs row)")
    if hub_name is not None:
        hint = "download the set and pass its local path instead: load_pair_file(path=...)"
        source, name = hub_source(hub_name), hub_name
        rows = hub_rows(hub_name, config=hub_config, split=hub_split, local_hint=hint)
    else:
        if path is None:
            raise ConfigError("load_pair_file needs a path (or hub_name)")
        p = resolve_path(path, "")
        source, name = str(p), p.stem
        rows = _file_rows(p, fmt or _infer_format(p), source)
    mapped = {stereo_col, anti_col, category_col, id_col}

    def make_pair(row: RawRow) -> Pair:
        f = row.fields
        stereo, anti = distinct_texts(text_field(f, stereo_col), text_field(f, anti_col))
        category = text_field(f, category_col).strip() if category_col is not None else default_category
        row_id = _id_value(f, id_col) if id_col is not None else row.line
        columns = {k: v for k, v in f.items() if k not in mapped}
        meta = {"line": row.line, "columns": columns}
        if parallel_prefix is not None:
            meta[PARALLEL_KEY] = f"{parallel_prefix}{row_id}"
        return Pair(stereo, anti, category, language, f"{name}:{row_id}", meta)

    return build_pairs(rows, make_pair, source=source, on_bad_row=on_bad_row)


def _infer_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the format of {path} from its suffix; pass fmt= one of "
                          f"{sorted(set(FORMATS.values()))}")
    return fmt


def _file_rows(path: Path, fmt: str, source: str) -> Iterator[RawRow]:
    if fmt not in FORMATS.values():
        raise ConfigError(f"unknown pair-file format {fmt!r}; use one of {sorted(set(FORMATS.values()))}")
    text = read_text(path)
    if fmt == "jsonl":
        return jsonl_rows(text)
    if fmt == "json":
        return json_array_rows(text, 0, source)
    return delimited_rows(text, "," if fmt == "csv" else "\t", source)


def _id_value(fields, id_col: str) -> str:
    value = fields.get(id_col)
    if value is None or not str(value).strip():
        raise RowProblem(f"missing field {id_col!r}")
    return str(value).strip()
