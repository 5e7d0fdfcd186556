"""Bias evaluation on the multilingual and narrative pair sets: one table of tasks, three scorings.

- ``crows``: CrowS-Pairs scoring (lm-eval ``crows_pairs_*``: share of pairs where the
  model gives sent_more the higher sentence log-likelihood) for any language's file:
  the French release (``crows_pairs_french``), its revised English set, both sides of
  the parallel EN-FR file, and the 10 languages of the gender set.
- ``stereoset``: StereoSet intrasentence (bias-bench SS / LMS / ICAT) on the
  Brazilian-Portuguese translation.
- ``preference``: the share of pairs where the model prefers the biased side (CHBias
  posts, RedditBias target swaps and attribute swaps, StereoSet intersentence as
  context + continuation: the context is common to both sides, so the comparison is
  the continuation's), with the mean likelihood difference.

Every task loads its pairs through the pair-source plugins (a file mapping for
``pair_file`` where that covers the layout), so it evaluates exactly what a pipeline
can calibrate on.  Results carry per-item records (``items``) and 95 % Wilson
intervals.  ``split="holdout"`` scores only the held-out half (by
:func:`~fairgptq.contract.pairs.split_key`, so translations of a pair share
its half), and calibration pairs passed in are checked for overlap by id, translation
and text.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from statistics import fmean
from typing import Any, Iterable, Literal, Sequence

from ..core.errors import ConfigError
from ..contract.pairs import Pair, split_key
from ..datasets_adapters.data_location import data_path
from ..statistics import at_unit_weights, resampled_preference
from .crows_pairs import PAIR_CHOICE, SCORINGS, CrowsScoringOption, crows_pairs_items, crows_pairs_metrics
from ..contract.kinds import ItemKind
from .intervals import wilson_interval
from .scoring import ContinuationScore, score_sentences
from ..datasets_adapters.splits import SPLITS, find_overlap, split_items
from .stereoset import ON_OVERLAP, SCORING as STEREOSET_SCORING, STEREOSET, HoldoutOption, stereoset_items, stereoset_metrics
from ..contract.tasks import EvaluationTask, TaskContext

logger = logging.getLogger(__name__)

GENDER_LANGUAGES = ("ar", "de", "en", "fi", "fr", "id", "ko", "th", "vi", "zh")
_FRENCH_DIR = "crows_pairs_french"
_CROWS_TSV = {"fmt": "tsv", "stereo_col": "sent_more", "anti_col": "sent_less", "category_col": "bias_type",
              "id_col": "", "parallel_prefix": "crows_pairs:"}


@dataclass(frozen=True)
class PairTask:
    """A named evaluation: the pair source and its parameters (``path`` relative to the data folder)."""

    scoring: str  # "crows", "stereoset" or "preference"
    source: str
    params: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    description: str = ""


def _gender(language: str) -> PairTask:
    return PairTask("crows", "pair_file", {"fmt": "csv", "stereo_col": "A_x", "anti_col": "B_x", "id_col": "ID",
                                           "default_category": "gender", "language": language,
                                           "parallel_prefix": "crows_pairs:"},
                    f"crows_pairs_gender_multilingual/cps_translated_{language}_formatted.csv",
                    f"CrowS-Pairs scoring on the gender pairs translated to {language!r}")


PAIR_TASKS: dict[str, PairTask] = {
    "crows_pairs_english": PairTask("crows", "crows_pairs", {}, "crows_pairs/crows_pairs_anonymized.csv",
                                    "CrowS-Pairs (English) with a held-out split and 95 % interval"),
    "crows_pairs_french": PairTask("crows", "pair_file", {**_CROWS_TSV, "language": "fr"},
                                   f"{_FRENCH_DIR}/crows_pairs_FR_languagearc_contribution+210.csv",
                                   "French CrowS-Pairs, lm-eval's crows_pairs_french"),
    "crows_pairs_english_revised": PairTask("crows", "pair_file", {**_CROWS_TSV, "language": "en"},
                                            f"{_FRENCH_DIR}/crows_pairs_EN_revised+210.csv",
                                            "the revised English CrowS-Pairs of the French release"),
    "crows_pairs_parallel_en": PairTask("crows", "pair_file", {**_CROWS_TSV, "language": "en"},
                                        f"{_FRENCH_DIR}/crows_pairs_EN_revised_FR_with_comments.csv",
                                        "the English side of the parallel EN-FR CrowS-Pairs file"),
    "crows_pairs_parallel_fr": PairTask("crows", "pair_file", {**_CROWS_TSV, "language": "fr",
                                                               "stereo_col": "sent_more_fr", "anti_col": "sent_less_fr"},
                                        f"{_FRENCH_DIR}/crows_pairs_EN_revised_FR_with_comments.csv",
                                        "the French side of the parallel EN-FR CrowS-Pairs file"),
    **{f"crows_pairs_gender_{lang}": _gender(lang) for lang in GENDER_LANGUAGES},
    "stereoset_ptbr": PairTask("stereoset", "stereoset", {"kind": "intrasentence", "language": "pt"},
                               "stereoset_ptbr/dev_ptbr.json", "StereoSet intrasentence in Brazilian Portuguese"),
    "stereoset_intersentence": PairTask("preference", "stereoset", {"kind": "intersentence", "with_context": True},
                                        "stereoset/stereoset_dev_flat.jsonl",
                                        "StereoSet intersentence as pair preference (context + continuation)"),
    "chbias": PairTask("preference", "chbias", {}, "chbias", "CHBias posts: pair preference"),
    "redditbias_target_swap": PairTask("preference", "redditbias", {"kind": "target_swap"}, "redditbias",
                                       "RedditBias target swaps: pair preference"),
    "redditbias_attribute_swap": PairTask("preference", "redditbias", {"kind": "attribute_swap"}, "redditbias",
                                          "RedditBias attribute swaps: pair preference"),
}
"""Task name -> how to load and score it.  The English CrowS-Pairs file is here as well as under
``crows_pairs`` so that its held-out half can be scored (``split``) like the other sets."""


class PairTaskOptions(CrowsScoringOption, HoldoutOption):
    """``pair_split``: the part of each pair set scored (``holdout``: the half calibration never draws from)."""

    pair_split: Literal[SPLITS] = "all"  # type: ignore[valid-type]


def load_task_pairs(task: str, path: str | Path | None = None) -> list[Pair]:
    """The pairs of ``task`` through its pair-source plugin, from ``path`` or the local data copy.

    The source's own list comes back (built-ins return LoadedPairs, whose ``bad_rows`` say what was dropped).
    """
    from ..registry import default_registry

    spec = _task(task)
    where = Path(path) if path is not None else data_path(spec.path) if spec.path else None
    params = {**spec.params, **({"path": str(where)} if where is not None else {})}
    return default_registry().get("pair_sources", spec.source).factory(**params)


def evaluate_pair_task(model, tokenizer, task: str, *, path: str | Path | None = None, scoring: str = "lm_eval",
                       split: str = "all", holdout_fraction: float = 0.5,
                       calibration: Iterable[Pair | str] | None = None, on_overlap: str = "error",
                       limit: int | None = None, batch_size: int = 16, progress: bool = True) -> dict:
    """Score one task of :data:`PAIR_TASKS` on ``split`` (first ``limit`` pairs of it) and return its result."""
    spec = _task(task)
    if scoring not in SCORINGS:
        raise ConfigError(f"pair scoring {scoring!r} is unknown; use one of {sorted(SCORINGS)}")
    if on_overlap not in ON_OVERLAP:
        raise ConfigError(f"on_overlap must be one of {ON_OVERLAP}, got {on_overlap!r}")
    pairs = split_items(load_task_pairs(task, path), split, holdout_fraction)[:limit]
    if not pairs:
        raise ConfigError(f"{task}: no pairs to evaluate in split {split!r}")
    overlap = _check_overlap(task, pairs, calibration, on_overlap)
    head = {"task": task, "language": pairs[0].language, "split": split,
            "holdout_fraction": holdout_fraction if split != "all" else None, "overlap": overlap}
    if spec.scoring == "stereoset":
        return {**head, **_stereoset(model, tokenizer, pairs, batch_size, progress, task)}
    sentences = [s for p in pairs for s in (p.stereo, p.anti)]
    scores = score_sentences(model, tokenizer, sentences, batch_size=batch_size, progress=progress, description=task)
    values = [s.logprob if scoring == "lm_eval" else s.mean_logprob for s in scores]
    more, less = values[0::2], values[1::2]
    head.update({"scoring": scoring, "scoring_description": SCORINGS[scoring],
                 "sentence_perplexity": sentence_perplexity(scores)})
    if spec.scoring == "crows":
        return {**head, **_crows(pairs, more, less)}
    return {**head, **_preference(pairs, more, less)}


def sentence_perplexity(scores: Sequence[ContinuationScore]) -> float:
    """Per-token perplexity over every scored sentence (after the prefix token).

    A model trained mostly on English can score a language it barely knows; a perplexity
    far above its English one says that language's bias score measures little.
    """
    return math.exp(-sum(s.logprob for s in scores) / sum(s.n_tokens for s in scores))


def _task(task: str) -> PairTask:
    if task not in PAIR_TASKS:
        raise ConfigError(f"unknown pair task {task!r}; choose from {sorted(PAIR_TASKS)}")
    return PAIR_TASKS[task]


def _crows(pairs: Sequence[Pair], more: Sequence[float], less: Sequence[float]) -> dict:
    items = crows_pairs_items(pairs, more, less)
    wins = sum(it["choice"] for it in items)
    return {**crows_pairs_metrics(items), "pct_stereotype_ci95": list(wilson_interval(wins, len(items))),
            "items": items}


def preference_items(pairs: Sequence[Pair], biased: Sequence[float], other: Sequence[float]) -> list[dict]:
    """One record per pair: its id, category, both sides' log-likelihoods, and ``choice`` 1 = the biased side."""
    return [{"id": p.source_id, "bias_type": p.category, "ll_biased": b, "ll_other": o, "choice": int(b > o)}
            for p, b, o in zip(pairs, biased, other)]


def preference_metrics(items: Sequence[dict]) -> dict:
    """Share of pairs where the biased side is more likely (Wilson 95 % interval); mean signed and absolute
    likelihood difference; overall and per category, from item records."""
    def summary(group: list[dict]) -> dict:
        shares = at_unit_weights(resampled_preference(group), len(group))
        return {"n": len(group), "pct_prefer_biased": shares["pct_prefer_biased"],
                "pct_prefer_biased_ci95": list(wilson_interval(sum(it["choice"] for it in group), len(group))),
                "likelihood_diff": shares["likelihood_diff"],
                "abs_likelihood_diff": fmean(abs(it["ll_biased"] - it["ll_other"]) for it in group)}

    by_category: dict[str, list[dict]] = {}
    for it in items:
        by_category.setdefault(it["bias_type"], []).append(it)
    return {**summary(list(items)), "by_category": {c: summary(g) for c, g in sorted(by_category.items())}}


def _preference(pairs: Sequence[Pair], biased: Sequence[float], other: Sequence[float]) -> dict:
    items = preference_items(pairs, biased, other)
    return {**PREFERENCE.summarize(items), "items": items}  # the kind's summary: distances from parity included


def _stereoset(model, tokenizer, items: Sequence[Pair], batch_size: int, progress: bool, task: str) -> dict:
    sentences = [s for p in items for s in (p.stereo, p.anti, p.meta["unrelated"])]
    scored = score_sentences(model, tokenizer, sentences, batch_size=batch_size, progress=progress, description=task)
    scores = [s.mean_logprob for s in scored]
    records = stereoset_items(items, scores[0::3], scores[1::3], scores[2::3])
    wins = sum(r["stereo"] > r["anti"] for r in records)
    return {"kind": "intrasentence", "scoring": STEREOSET_SCORING, "sentence_perplexity": sentence_perplexity(scored),
            **stereoset_metrics(records),
            "pct_items_stereotype": 100.0 * wins / len(items),
            "pct_items_stereotype_ci95": list(wilson_interval(wins, len(items))), "items": records}


def _check_overlap(task: str, pairs: Sequence[Pair], calibration: Iterable[Pair | str] | None,
                   on_overlap: str) -> dict:
    """Evaluated pairs that share an id, a translation (split key) or a sentence with the calibration pairs."""
    if calibration is None:
        return {"checked": False}
    calibration = list(calibration)
    keys = {split_key(c) for c in calibration if isinstance(c, Pair)}
    hits = sorted(set(find_overlap(pairs, calibration)) | {p.source_id for p in pairs if split_key(p) in keys})
    if hits:
        msg = (f"{task} overlaps the calibration pairs: {len(hits)} of {len(pairs)} pairs (e.g. {hits[:3]}) share "
               f"an id, a translation or a sentence with them; evaluate split='holdout' with calibration drawn "
               f"from split='calibration'")
        if on_overlap == "error":
            raise ConfigError(msg + ", or pass on_overlap='warn' to score anyway.")
        warnings.warn(msg, stacklevel=3)
        logger.warning(msg)
    return {"checked": True, "n_overlapping": len(hits), "examples": hits[:5]}


def _run(model, tokenizer, options: PairTaskOptions, context: TaskContext) -> dict:
    return evaluate_pair_task(model, tokenizer, context.name, path=context.path, scoring=options.crows_scoring,
                              split=options.pair_split, holdout_fraction=options.holdout_fraction,
                              calibration=context.calibration, on_overlap=context.on_overlap, limit=context.limit,
                              batch_size=context.batch_size, progress=context.progress)


#: records ``choice`` (1: the biased side preferred), ``ll_biased``, ``ll_other``, ``bias_type``
PREFERENCE = ItemKind("preference", frozenset({"choice", "ll_biased", "ll_other"}), preference_metrics,
                      resampled_preference, headline=("pct_prefer_biased",),
                      choice_metrics=frozenset({"pct_prefer_biased"}), ideal={"pct_prefer_biased": 50.0},
                      bias=frozenset({"pct_prefer_biased"}))
_KIND_OF_SCORING = {"crows": PAIR_CHOICE, "stereoset": STEREOSET, "preference": PREFERENCE}

TASKS: tuple[EvaluationTask, ...] = tuple(
    EvaluationTask(name, spec.description, _run, PairTaskOptions, data_file=spec.path, needs_data=spec.path is not None,
                   read_data=partial(load_task_pairs, name), kind=_KIND_OF_SCORING[spec.scoring])
    for name, spec in PAIR_TASKS.items())
"""One task per entry of :data:`PAIR_TASKS`; one without a path reads its pair source's own default data."""
