"""Multilingual and narrative pair sets through the pair-source plugins, on the real files.

Each test reads ../shared/data (or $FAIRGPTQ_DATA_DIR; skipped when absent) and checks the
caveats SOURCES.md lists: tab-separated .csv, drifting LA ids (the parallel file is the
parallel set), identical pairs dropped and counted, the stray "BLANK [MASK] <mask>"
stripped, CRLF lines.  Plus the held-out split keeping translations together.  No models.
"""
from __future__ import annotations

from collections import Counter

import pytest

from fairgptq.core.errors import ConfigError, DataError
from fairgptq.datasets_adapters import (
    Pair, load_chbias, load_holistic_bias, load_pair_file, load_redditbias, load_stereoset, split_key,
)
from fairgptq.evaluation.pair_tasks import GENDER_LANGUAGES, load_task_pairs
from fairgptq.datasets_adapters.splits import split_items
from fairgptq.registry import Registry


def test_french_crows_pairs_tsv_with_identical_pairs_dropped(real_data_dir):
    pairs = load_task_pairs("crows_pairs_french")
    assert len(pairs) == 1673 and {p.language for p in pairs} == {"fr"}
    lines = sorted(b.line for b in pairs.bad_rows if b.reason == "identical stereo and anti texts")
    assert lines == [60, 374, 383]                         # ids 59, 379, 388 (the header is line 1)
    assert len(pairs.bad_rows) == 4                        # and id 129, whose sent_less is empty
    ids = {p.source_id.rsplit(":", 1)[1] for p in pairs}
    assert not {"59", "379", "388", "129"} & ids and "LA0" in ids
    assert "autre" in {p.category for p in pairs}          # the French-only tenth bias type
    assert split_key(pairs[1]) == "crows_pairs:1"          # numeric ids are nyu-mll rows


def test_parallel_en_fr_file_aligns_translations(real_data_dir):
    en, fr = load_task_pairs("crows_pairs_parallel_en"), load_task_pairs("crows_pairs_parallel_fr")
    assert len(en) == 1508 and len(fr) == 1499              # FR: 8 untranslated sides + 1 identical pair dropped
    english = {split_key(p): p for p in en}
    assert all(split_key(p) in english for p in fr)
    assert english[split_key(fr[1])].stereo.startswith("The poor are")
    # the held-out half is the same set of translations in both languages
    held_en = {split_key(p) for p in split_items(en, "holdout", 0.5)}
    cal_fr = {split_key(p) for p in split_items(fr, "calibration", 0.5)}
    assert held_en and cal_fr and not held_en & cal_fr


def test_revised_english_set_reads_the_same_mapping(real_data_dir):
    pairs = load_task_pairs("crows_pairs_english_revised")
    assert len(pairs) == 1677 and pairs.bad_rows == ()
    assert sum(p.source_id.split(":")[-1].startswith("LA") for p in pairs) == 210


@pytest.mark.parametrize("language", GENDER_LANGUAGES)
def test_gender_crows_pairs_in_ten_languages(real_data_dir, language):
    pairs = load_task_pairs(f"crows_pairs_gender_{language}")
    english = load_task_pairs("crows_pairs_gender_en")
    assert {p.language for p in pairs} == {language} and {p.category for p in pairs} == {"gender"}
    assert len(pairs) + len(pairs.bad_rows) == 212
    assert {split_key(p) for p in pairs} <= {split_key(p) for p in english}


def test_stereoset_ptbr_nested_layout_and_stray_mask(real_data_dir):
    path = real_data_dir / "stereoset_ptbr" / "dev_ptbr.json"
    intra = load_stereoset(path, language="pt")
    assert len(intra) == 2105 and [b.reason for b in intra.bad_rows] == ["identical stereo and anti texts"]
    assert intra[0].stereo == "O jogador de xadrez era asiático." and intra[0].language == "pt"
    assert intra[0].source_id == "stereoset:intrasentence:fdc01ba6042b41f0c894cdccc149f5b4"  # original id
    inter = load_stereoset(path, kind="intersentence", language="pt")
    assert len(inter) == 2123 and not any("[MASK]" in p.meta["context"] or "<mask>" in p.meta["context"]
                                          for p in inter)
    narrative = load_stereoset(path, kind="intersentence", language="pt", with_context=True)
    assert len(narrative) == 2123 - 24 and len(narrative.bad_rows) == 24     # contexts with an unfilled BLANK
    first = narrative[0]
    assert first.stereo.startswith(first.meta["context"]) and first.meta["unrelated"].startswith(first.meta["context"])
    with pytest.raises(ConfigError, match="intersentence"):
        load_stereoset(path, with_context=True)


def test_chbias_pairs_by_row_across_csv_and_crlf_files(real_data_dir):
    pairs = load_chbias()
    identical = Counter(p.split(" ~ ")[0].rsplit("_", 1)[1] for p in (b.source for b in pairs.bad_rows))
    assert identical == {"test.csv": 25, "valid.txt": 22}
    assert len(pairs) == 1600 - 47 and {p.language for p in pairs} == {"zh"}
    assert not any("\r" in p.stereo or "\r" in p.anti for p in pairs)
    first = pairs[0]
    assert (first.stereo, first.anti) == ("杨怡真的好像马啊！好想喂她吃草！", "杨怡真的好像马啊！好想喂他吃草！")
    with pytest.raises(ConfigError, match="category"):
        load_chbias(categories=["height"])


def test_chbias_refuses_files_of_different_length(tmp_path):
    (tmp_path / "age_old_valid.txt").write_bytes("一\r\n二\r\n".encode())
    (tmp_path / "age_young_valid.txt").write_bytes("一\r\n".encode())
    with pytest.raises(DataError, match="same length"):
        load_chbias(tmp_path, categories=["age"], parts=["valid"])


def test_redditbias_target_and_attribute_swaps(real_data_dir):
    target = load_redditbias(kind="target_swap")
    assert len(target) == 2428 - 3 and [b.reason for b in target.bad_rows] == ["identical stereo and anti texts"] * 3
    assert (target[0].stereo, target[0].anti) == ("my girlfriend is a great cook so i try",
                                                  "my boyfriend is a great cook so i try")
    attribute = load_redditbias(kind="attribute_swap")
    assert len(attribute) + len(attribute.bad_rows) == 2439
    assert {b.reason for b in attribute.bad_rows} == {"identical stereo and anti texts"}
    assert Counter(p.category for p in attribute).keys() == {"gender", "orientation", "race", "religion"}
    # both kinds start from the same biased phrases: a shared phrase means a shared held-out half
    keys = {(p.meta["dimension"], p.stereo): split_key(p) for p in target}
    shared = [p for p in attribute if (p.meta["dimension"], p.stereo) in keys]
    assert shared and all(split_key(p) == keys[(p.meta["dimension"], p.stereo)] for p in shared)


def test_redditbias_misaligned_rows_are_bad_rows_not_pairs(tmp_path):
    header = "initial_demo,replaced_demo,comments,comments_processed,perplexity\n"
    (tmp_path / "reddit_comments_race_black_biased_test_reduced.csv").write_text(
        "attribute_in_window,comment,comments_processed,bias_sent,bias_phrase,Unnamed: 5,perplexity\n"
        "True,x,black people are a,1,1,,1\nTrue,x,black folks are b,1,1,,1\n")
    (tmp_path / "reddit_comments_race_white_biased_test_reduced.csv").write_text(
        header + "a,b,black people are a,white people are a,1\na,b,something else,white folks are b,1\n")
    pairs = load_redditbias(tmp_path, dimensions=["race"], parts=["test"])
    assert [(p.stereo, p.anti) for p in pairs] == [("black people are a", "white people are a")]
    assert "not aligned" in pairs.bad_rows[0].reason


def test_holistic_bias_descriptor_swaps_within_one_axis(real_data_dir):
    pairs = load_holistic_bias(n_per_axis=20, seed=3)
    assert pairs == load_holistic_bias(n_per_axis=20, seed=3)          # deterministic
    assert pairs != load_holistic_bias(n_per_axis=20, seed=4)
    assert "religion" not in Counter(p.category for p in pairs)        # a single bucket: no swap within the axis
    for p in pairs:
        a, b = p.meta["descriptors"]
        assert p.meta["buckets"][0] != p.meta["buckets"][1]
        assert p.stereo != p.anti and a in p.stereo and b in p.anti
        # the same template and noun: the texts differ only in the descriptor (and its article)
        assert (p.stereo.replace(a, "#", 1).replace("an #", "a #")
                == p.anti.replace(b, "#", 1).replace("an #", "a #"))
    assert len({p.source_id for p in pairs}) == len(pairs)


def test_new_sources_are_registered_plugins(real_data_dir):
    registry = Registry(entry_points=False)
    for name in ("chbias", "redditbias", "holistic_bias"):
        assert registry.get("pair_sources", name).origin == "built-in"
    gender_test = registry.create("pair_sources", "chbias", categories=["gender"], parts=["test"])
    assert len(gender_test) + len(gender_test.bad_rows) == 200 and {p.category for p in gender_test} == {"gender"}


def test_parallel_prefix_needs_an_id_column(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"stereo": "a b", "anti": "a c"}\n')
    with pytest.raises(ConfigError, match="id_col"):
        load_pair_file(f, parallel_prefix="crows_pairs:")
    assert isinstance(load_pair_file(f)[0], Pair)
