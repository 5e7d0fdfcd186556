"""File reading shared by the pair sources: bytes in, numbered rows out.

Files are read as bytes and decoded with ``surrogateescape`` so that a line with
non-UTF-8 bytes is reported as one bad row (see :mod:`.validation`) instead of the
whole file failing with a UnicodeDecodeError.  Every row keeps the 1-based line it
starts on, for bad-row reports.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from ..contract import DataError
from .validation import UNDECODABLE_REASON, RawRow, has_undecodable
from .data_location import data_path

FORMATS: dict[str, str] = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


def resolve_path(path: str | Path | None, default_relative: str) -> Path:
    """The user's path, else ``default_relative`` in the data locations (:mod:`.data_location`); a missing
    file is a DataError with the fix (for a default file: naming all three locations)."""
    p = Path(path).expanduser() if path is not None else data_path(default_relative)
    if not p.is_file():
        how = "pass its path" if path is not None else "it is not a file"
        raise DataError(f"data file {p} not found; {how}")
    return p


def read_text(path: Path) -> str:
    """The file's text; undecodable bytes survive as lone surrogates, a UTF-8 BOM is dropped."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def line_at(text: str, offset: int) -> int:
    """1-based line number of a character offset."""
    return text.count("\n", 0, offset) + 1


def jsonl_rows(text: str) -> Iterator[RawRow]:
    """One JSON object a line; blank lines are ignored, anything else unreadable is a bad row."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        if has_undecodable(line):
            yield RawRow(number, None, UNDECODABLE_REASON)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            yield RawRow(number, None, f"invalid JSON ({e.msg})")
            continue
        yield _object_row(number, value)


def json_array_rows(text: str, start: int, source: str) -> Iterator[RawRow]:
    """Elements of the JSON array opening at ``text[start]``, each with the line it starts on.

    Decoding element by element (``raw_decode``) is what gives JSON documents real line
    numbers; a syntax error cannot be skipped past, so it is a DataError for the file.
    """
    decoder = json.JSONDecoder()
    lines = _LineCounter(text)  # incremental: counting from the top for each element is quadratic in the file
    i = _skip_space(text, start)
    if text[i:i + 1] != "[":
        raise DataError(f"{source}:{line_at(text, i)}: expected a JSON array")
    i = _skip_space(text, i + 1)
    if text[i:i + 1] == "]":
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{source}:{e.lineno}: invalid JSON ({e.msg}); the file cannot be read past it") from None
        yield _object_row(lines.at(i), value)
        i = _skip_space(text, end)
        if text[i:i + 1] == "]":
            return
        if text[i:i + 1] != ",":
            raise DataError(f"{source}:{line_at(text, i)}: expected ',' or ']' in a JSON array")
        i = _skip_space(text, i + 1)


def delimited_rows(text: str, delimiter: str, source: str) -> Iterator[RawRow]:
    """CSV/TSV records as header-keyed dicts; quoted fields may span lines (the row keeps its first line)."""
    # split on "\n" only: str.splitlines would also break at \u2028 & co. inside fields
    reader = csv.reader((line + "\n" for line in text.split("\n")), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{source} is empty") from None
    except csv.Error as e:
        raise DataError(f"{source}:1: unreadable header ({e})") from None
    if not any(h.strip() for h in header) or any(has_undecodable(h) for h in header):
        raise DataError(f"{source}:1: the header line is empty or not UTF-8; the columns cannot be named")
    header = [h.strip() for h in header]
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield RawRow(start, None, f"unparsable {'TSV' if delimiter == chr(9) else 'CSV'} record ({e})")
            previous_end = reader.line_num
            continue
        previous_end = reader.line_num
        if not record or not any(field.strip() for field in record):
            continue
        if len(record) != len(header):
            yield RawRow(start, None, f"{len(record)} fields where the header has {len(header)}")
        elif any(has_undecodable(field) for field in record):
            yield RawRow(start, None, UNDECODABLE_REASON)
        else:
            yield RawRow(start, dict(zip(header, record)))


class _LineCounter:
    """1-based line numbers of increasing offsets, counting each stretch of text once."""

    def __init__(self, text: str) -> None:
        self.text, self.offset, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        if offset < self.offset:
            return line_at(self.text, offset)
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def _object_row(line: int, value: object) -> RawRow:
    if not isinstance(value, dict):
        return RawRow(line, None, f"expected a JSON object, got {type(value).__name__}")
    return RawRow(line, value)


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i
