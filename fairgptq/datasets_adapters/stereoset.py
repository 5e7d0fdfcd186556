"""StereoSet (Nadeem et al., 2021): the Fair-GPTQ calibration pairs and an evaluation set.

Two layouts are read: the flat JSONL kept in ../shared/data (one item a line, gold
labels resolved) and the original nested ``dev.json`` (``data.<kind>[*].sentences``
with ``gold_label``), plus the hub copy (``McGill-NLP/stereoset``) which is the nested
layout with columns instead of lists.  All three become the same flat fields, so one
function builds the pairs.  The pair holds the stereotype / anti-stereotype sentence
alone (intrasentence: the context with BLANK filled), as the reference calibrates; the
context, target and the "unrelated" sentence stay in ``meta`` for evaluation (LMS).
``with_context`` makes intersentence pairs "context + continuation" instead: the
multi-sentence, narrative form of the same contrast.

Translations in the nested layout (StereoSet-PTBR, ``language="pt"``) keep the original
item ids, so ``source_id`` matches the English dev.json's.  Machine translation left
artefacts in some intersentence contexts: a stray " BLANK [MASK] <mask>" (stripped
here) and an unfilled "BLANK" where the English has a word (intersentence has no blank
to fill; with ``with_context`` such items are bad rows, since the text is broken).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..contract import ConfigError, DataError, Pair
from .hub import hub_rows, hub_source
from .reading import json_array_rows, jsonl_rows, read_text, resolve_path
from .validation import LoadedPairs, RawRow, RowProblem, build_pairs, check_policy, distinct_texts, text_field

DEFAULT_FILE = "stereoset/stereoset_dev_flat.jsonl"
KINDS = ("intrasentence", "intersentence")
DOMAINS = ("gender", "profession", "race", "religion")
LABELS = ("stereotype", "anti-stereotype", "unrelated")
_STRAY_MASK = re.compile(r"\s*BLANK \[MASK\] <mask>")


def load_stereoset(path: str | Path | None = None, *, kind: str = "intrasentence",
                   domains: Iterable[str] | None = None, on_bad_row: str = "skip",
                   hub_name: str | None = None, language: str = "en", with_context: bool = False) -> LoadedPairs:
    """StereoSet pairs of one ``kind``, optionally only some bias ``domains``.

    category = bias_type; meta = {"target", "unrelated", "context", "kind"};
    source_id = "stereoset:<kind>:<item id>" (nested / hub) or "...:<line>" (flat file).
    ``language`` labels the pairs; ``with_context`` (intersentence only) puts the context
    before each sentence, stereo, anti and unrelated alike.
    """
    check_policy(on_bad_row)
    if kind not in KINDS:
        raise ConfigError(f"StereoSet kind must be one of {KINDS}, got {kind!r}")
    if with_context and kind != "intersentence":
        raise ConfigError("with_context applies to kind='intersentence' only: an intrasentence context is the "
                          "sentence itself with a BLANK")
    wanted = _check_domains(domains)
    if hub_name is not None:
        hint = f"use the local copy instead: load_stereoset(path=...) or $FAIRGPTQ_DATA_DIR/{DEFAULT_FILE}"
        source = hub_source(hub_name)
        rows = _nested_rows(hub_rows(hub_name, config=kind, split="validation", local_hint=hint), kind)
    else:
        p = resolve_path(path, DEFAULT_FILE)
        source = str(p)
        text = read_text(p)
        rows = _nested_rows(_nested_items(text, kind, source), kind) if _is_nested(text) else jsonl_rows(text)

    def make_pair(row: RawRow) -> Pair | None:
        f = row.fields
        item_kind = text_field(f, "type").strip()
        if item_kind not in KINDS:
            raise RowProblem(f"type is {item_kind!r}, expected one of {KINDS}")
        category = text_field(f, "bias_type").strip()
        if item_kind != kind or (wanted is not None and category not in wanted):
            return None
        stereo, anti = distinct_texts(text_field(f, "stereotype"), text_field(f, "anti-stereotype"))
        unrelated, context = text_field(f, "unrelated"), text_field(f, "context")
        if kind == "intersentence":
            context = _STRAY_MASK.sub("", context)
        if with_context:
            if "BLANK" in context:
                raise RowProblem(f"intersentence context holds an unfilled BLANK: {context!r}")
            stereo, anti, unrelated = (f"{context.strip()} {s.strip()}" for s in (stereo, anti, unrelated))
        meta = {"target": text_field(f, "target"), "unrelated": unrelated, "context": context, "kind": kind}
        return Pair(stereo, anti, category, language, f"stereoset:{kind}:{f.get('id') or row.line}", meta)

    return build_pairs(rows, make_pair, source=source, on_bad_row=on_bad_row)


def _check_domains(domains: Iterable[str] | None) -> frozenset[str] | None:
    if domains is None:
        return None
    if isinstance(domains, str):
        domains = [domains]
    wanted = frozenset(domains)
    if not wanted:
        raise ConfigError(f"domains is empty; pass None for all of {DOMAINS} or some of them")
    unknown = sorted(wanted - set(DOMAINS))
    if unknown:
        raise ConfigError(f"unknown StereoSet domain(s) {unknown}; choose from {DOMAINS}")
    return wanted


def _is_nested(text: str) -> bool:
    """Nested dev.json unless the first non-blank line is itself a complete flat item."""
    first = next((line for line in text.split("\n") if line.strip()), "")
    try:
        value = json.loads(first)
    except json.JSONDecodeError:
        return True
    return isinstance(value, dict) and "data" in value


def _nested_items(text: str, kind: str, source: str) -> Iterator[RawRow]:
    """Items of ``data.<kind>`` with the line each starts on."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{source}:{e.lineno}: invalid JSON ({e.msg}); expected StereoSet's dev.json layout "
                        "or one item per line") from None
    section = document.get("data", {}).get(kind) if isinstance(document, dict) else None
    if not isinstance(section, list):
        raise DataError(f"{source} has no data.{kind} list (StereoSet dev.json layout)")
    # A key cannot occur unescaped inside a JSON string, so this finds the section itself.
    match = re.search(rf'"{kind}"\s*:\s*\[', text)
    if match is None:
        raise DataError(f"{source}: cannot locate the data.{kind} list in the text (escaped key?)")
    return json_array_rows(text, match.end() - 1, source)


def _nested_rows(items: Iterable[RawRow], kind: str) -> Iterator[RawRow]:
    """Nested items (file or hub) rewritten to the flat fields: sentences resolved by gold label."""
    for item in items:
        if item.fields is None:
            yield item
            continue
        try:
            by_label = _sentences_by_label(item.fields.get("sentences"))
        except RowProblem as p:
            yield RawRow(item.line, None, p.reason)
            continue
        flat = {k: item.fields.get(k) for k in ("id", "target", "bias_type", "context")}
        yield RawRow(item.line, {**flat, "type": kind, **by_label})


def _sentences_by_label(sentences: Any) -> dict[str, Any]:
    if isinstance(sentences, Mapping):  # hub layout: a dict of parallel lists
        sentences = [dict(zip(sentences, values)) for values in zip(*sentences.values())]
    if not isinstance(sentences, list):
        raise RowProblem("missing field 'sentences'")
    by_label: dict[str, Any] = {}
    for s in sentences:
        label = s.get("gold_label") if isinstance(s, Mapping) else None
        if label not in LABELS:
            raise RowProblem(f"sentence with gold_label {label!r}, expected one of {LABELS}")
        if label in by_label:
            raise RowProblem(f"two sentences labelled {label!r}")
        by_label[label] = s.get("sentence")
    return by_label
