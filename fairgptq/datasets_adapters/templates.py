"""Template-generated pairs (templates x group word pairs x occupations) for quick custom sets.

A template such as ``"The {occupation} said that {group} would be late."`` filled with a
(stereotypical group word, anti-stereotypical group word) pair gives a minimal pair that
differs only in the group word, the shape Fair-GPTQ's term needs.  Which word is the
stereotypical one depends on the occupation (nurse vs. engineer), so each call takes one
occupation list and group pairs oriented *for that list*; :func:`default_gender_template_pairs`
combines the two built-in directions.  Slots: ``{group}``, ``{occupation}`` and their
capitalised forms ``{Group}``, ``{Occupation}`` (sentence starts).
"""
from __future__ import annotations

import string
from typing import Sequence

from ..contract import ConfigError, Pair
from .validation import LoadedPairs

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "The {occupation} said that {group} would finish the work tonight.",
    "Everyone agreed that {group} was the most talented {occupation} in town.",
    "{Group} has been the {occupation} here for ten years.",
)
# Occupations with a strong gender stereotype (after WinoBias's occupation statistics).
MALE_STEREOTYPED_OCCUPATIONS: tuple[str, ...] = (
    "engineer", "surgeon", "pilot", "mechanic", "programmer", "carpenter", "firefighter", "architect")
FEMALE_STEREOTYPED_OCCUPATIONS: tuple[str, ...] = (
    "nurse", "receptionist", "secretary", "hairdresser", "nanny", "librarian", "housekeeper", "dietitian")
MALE_STEREO_GROUP_PAIRS: tuple[tuple[str, str], ...] = (("he", "she"),)
FEMALE_STEREO_GROUP_PAIRS: tuple[tuple[str, str], ...] = (("she", "he"),)

_GROUP_SLOTS = {"group", "Group"}
_OCCUPATION_SLOTS = {"occupation", "Occupation"}


def generate_template_pairs(templates: Sequence[str] = DEFAULT_TEMPLATES,
                            group_pairs: Sequence[tuple[str, str]] = MALE_STEREO_GROUP_PAIRS,
                            occupations: Sequence[str] = MALE_STEREOTYPED_OCCUPATIONS, *,
                            category: str = "gender", language: str = "en",
                            source_name: str = "templates") -> LoadedPairs:
    """Every template filled with every (stereo word, anti word) pair and every occupation.

    Order is templates, then group pairs, then occupations, so the output is the same on
    every run; source_id = "<source_name>:t<template index>:<stereo word>/<anti word>:<occupation>".
    A template without an occupation slot gives one pair per group pair.
    """
    _check_words(group_pairs, occupations)
    pairs: list[Pair] = []
    for t, template in enumerate(templates):
        slots = _slots(template)
        fillers = occupations if slots & _OCCUPATION_SLOTS else ("",)
        if not fillers:
            raise ConfigError(f"template {template!r} has an occupation slot but no occupations were given")
        for stereo_word, anti_word in group_pairs:
            for occupation in fillers:
                meta = {"template": template, "group_stereo": stereo_word, "group_anti": anti_word,
                        "occupation": occupation}
                pairs.append(Pair(_fill(template, stereo_word, occupation), _fill(template, anti_word, occupation),
                                  category, language, f"{source_name}:t{t}:{stereo_word}/{anti_word}:{occupation}",
                                  meta))
    if not pairs:
        raise ConfigError("no templates given")
    return LoadedPairs(pairs, (), source_name)


def default_gender_template_pairs(templates: Sequence[str] = DEFAULT_TEMPLATES) -> LoadedPairs:
    """The built-in set in both directions: he-stereotyped and she-stereotyped occupations."""
    male = generate_template_pairs(templates, MALE_STEREO_GROUP_PAIRS, MALE_STEREOTYPED_OCCUPATIONS)
    female = generate_template_pairs(templates, FEMALE_STEREO_GROUP_PAIRS, FEMALE_STEREOTYPED_OCCUPATIONS)
    return LoadedPairs([*male, *female], (), "templates")


def _slots(template: str) -> set[str]:
    try:
        slots = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ConfigError(f"template {template!r} is not a valid format string ({e})") from None
    unknown = slots - _GROUP_SLOTS - _OCCUPATION_SLOTS
    if unknown:
        raise ConfigError(f"template {template!r} has unknown slot(s) {sorted(unknown)}; "
                          f"use {{group}}, {{Group}}, {{occupation}}, {{Occupation}}")
    if not slots & _GROUP_SLOTS:
        raise ConfigError(f"template {template!r} has no {{group}} slot, so its two sides would be identical")
    return slots


def _check_words(group_pairs: Sequence[tuple[str, str]], occupations: Sequence[str]) -> None:
    if not group_pairs:
        raise ConfigError("no group word pairs given")
    for pair in group_pairs:
        if len(pair) != 2 or not all(isinstance(w, str) and w.strip() for w in pair):
            raise ConfigError(f"group pair {pair!r} must be two non-empty words (stereo, anti)")
        if pair[0].strip() == pair[1].strip():
            raise ConfigError(f"group pair {pair!r} has the same word on both sides")
    if any(not isinstance(o, str) or not o.strip() for o in occupations):
        raise ConfigError("occupations must be non-empty strings")


def _fill(template: str, group: str, occupation: str) -> str:
    return template.format(group=group, Group=_capitalise(group), occupation=occupation,
                           Occupation=_capitalise(occupation))


def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]
