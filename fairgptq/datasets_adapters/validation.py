"""Row validation shared by every pair source: one rule set, one report format.

A bad row (missing field, empty text, identical stereo/anti, undecodable bytes,
unparsable line) must never turn into a mis-paired or silently dropped pair.  Every
adapter turns its raw rows into :class:`RawRow` and its pair-building function raises
:class:`RowProblem`; :func:`build_pairs` then either skips the row and remembers it as
a :class:`BadRow` (``on_bad_row="skip"``, logged once per file) or raises
:class:`~fairgptq.core.errors.DataError` naming file and line (``on_bad_row="error"``).
The skipped rows travel with the result (:attr:`LoadedPairs.bad_rows`) so a pipeline
can put them in its run report.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ..contract import ConfigError, DataError, Pair

logger = logging.getLogger(__name__)

#: (file, its bad rows) already warned about in this process: later reads log them quietly (run.log only)
_WARNED: set[tuple[str, tuple[str, ...]]] = set()
BAD_ROW_POLICIES: tuple[str, ...] = ("skip", "error")

# Bytes that are not UTF-8 survive decoding as lone surrogates (errors="surrogateescape"),
# which lets one bad line be reported while the rest of the file still reads.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
UNDECODABLE_REASON = "undecodable bytes (not UTF-8)"
_LOGGED_ROWS = 20  # a wrong column name makes every row bad: log a sample, keep them all


class RowProblem(Exception):
    """Raised while building one pair; caught by :func:`build_pairs` and turned into a BadRow."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BadRow:
    """One rejected row: where it is (file or hub name, 1-based line) and why."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class RawRow:
    """A row as read, before validation: its fields, or the problem that kept it unreadable."""

    line: int
    fields: Mapping[str, Any] | None
    problem: str | None = None


class LoadedPairs(list):
    """The pairs of one source (a plain ``list[Pair]``) plus the rows skipped while reading it."""

    def __init__(self, pairs: Iterable[Pair] = (), bad_rows: Iterable[BadRow] = (), source: str = "") -> None:
        super().__init__(pairs)
        self.bad_rows: tuple[BadRow, ...] = tuple(bad_rows)
        self.source = source


def check_policy(on_bad_row: str) -> None:
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ConfigError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")


def has_undecodable(text: str) -> bool:
    return bool(_UNDECODABLE.search(text))


def text_field(fields: Mapping[str, Any], key: str) -> str:
    """The non-empty, decodable text under ``key``, or a RowProblem saying what is wrong."""
    if key not in fields or fields[key] is None:
        raise RowProblem(f"missing field {key!r}")
    value = fields[key]
    if not isinstance(value, str):
        raise RowProblem(f"field {key!r} is not text ({type(value).__name__})")
    if not value.strip():
        raise RowProblem(f"empty text in field {key!r}")
    if has_undecodable(value):
        raise RowProblem(f"{UNDECODABLE_REASON} in field {key!r}")
    return value


def distinct_texts(stereo: str, anti: str) -> tuple[str, str]:
    """Reject a pair whose two sides are the same text: its bias difference would be zero by construction."""
    if stereo.strip() == anti.strip():
        raise RowProblem("identical stereo and anti texts")
    return stereo, anti


def build_pairs(rows: Iterable[RawRow], make_pair: Callable[[RawRow], Pair | None], *, source: str,
                on_bad_row: str = "skip") -> LoadedPairs:
    """Run ``make_pair`` on every row (None = row deliberately filtered out) applying the bad-row policy.

    Raises DataError for the first bad row under ``on_bad_row="error"`` and when no pair
    survives, so an empty or wholly broken file never reaches calibration.
    """
    check_policy(on_bad_row)
    pairs: list[Pair] = []
    bad: list[BadRow] = []
    for row in rows:
        try:
            if row.problem is not None:
                raise RowProblem(row.problem)
            pair = make_pair(row)
        except RowProblem as p:
            bad_row = BadRow(source, row.line, p.reason)
            if on_bad_row == "error":
                raise DataError(f"bad row {bad_row} (pass on_bad_row='skip' to skip such rows)") from None
            bad.append(bad_row)
            continue
        if pair is not None:
            pairs.append(pair)
    if bad:
        listed = "\n".join(f"  {b}" for b in bad[:_LOGGED_ROWS])
        hidden = len(bad) - _LOGGED_ROWS
        more = f"\n  ... and {hidden} more (all in LoadedPairs.bad_rows)" if hidden > 0 else ""
        key = (str(source), tuple(map(str, bad)))  # every point of a sweep reads the same file again
        logger.log(logging.INFO if key in _WARNED else logging.WARNING,
                   "skipped %d bad row(s) in %s:\n%s%s", len(bad), source, listed, more)
        _WARNED.add(key)
    if not pairs:
        detail = f"; {len(bad)} bad row(s), first: {bad[0]}" if bad else ""
        raise DataError(f"{source} yields no pairs{detail}")
    return LoadedPairs(pairs, bad, source)


def choose(values: Iterable[str] | str | None, allowed: tuple[str, ...], what: str, dataset: str) -> tuple[str, ...]:
    """The subset of ``allowed`` a user named (all of it for None); an unknown or empty choice is an error."""
    if values is None:
        return allowed
    chosen = (values,) if isinstance(values, str) else tuple(values)
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise ConfigError(f"{dataset} {what}(s) {unknown or list(chosen)} unknown or empty; choose from {allowed}")
    return chosen
