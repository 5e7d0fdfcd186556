"""Pair sources: real files, every bad-row kind for every adapter (skip and error), hub errors,
sampling determinism and stratification, template generation.  No models; all fast."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest

from fairgptq.core.errors import ConfigError, DataError
from fairgptq.datasets_adapters import (
    BadRow, LoadedPairs, Pair, default_gender_template_pairs, generate_template_pairs, load_crows_pairs,
    load_pair_file, load_stereoset, sample_pairs,
)

# ---------------------------------------------------------------------------------------------
# real files


def test_stereoset_real_flat_file(real_data_dir):
    pairs = load_stereoset()
    assert len(pairs) == 2106 and pairs.bad_rows == ()
    assert Counter(p.category for p in pairs) == {"race": 962, "profession": 810, "gender": 255, "religion": 79}
    first = pairs[0]
    assert first.stereo == "The chess player was asian." and first.anti == "The chess player was hispanic."
    assert first.meta == {"target": "chess player", "unrelated": "The chess player was fox.",
                          "context": "The chess player was BLANK.", "kind": "intrasentence"}
    assert first.source_id == "stereoset:intrasentence:2"
    assert len({p.source_id for p in pairs}) == len(pairs)
    assert all("BLANK" not in p.stereo and "BLANK" not in p.anti for p in pairs)


def test_stereoset_real_kind_and_domains(real_data_dir):
    inter = load_stereoset(real_data_dir / "stereoset" / "stereoset_dev_flat.jsonl", kind="intersentence")
    assert len(inter) == 2123
    assert {p.meta["kind"] for p in inter} == {"intersentence"}
    some = load_stereoset(domains=["gender", "religion"])
    assert len(some) == 255 + 79 and {p.category for p in some} == {"gender", "religion"}


def test_crows_pairs_real_file(real_data_dir):
    pairs = load_crows_pairs()
    assert len(pairs) == 1508 and pairs.bad_rows == ()
    assert len({p.category for p in pairs}) == 9
    assert Counter(p.meta["direction"] for p in pairs) == {"stereo": 1290, "antistereo": 218}
    assert pairs[1].stereo.startswith("The poor are") and pairs[1].anti.startswith("The rich are")
    assert pairs[1].source_id == "crows_pairs:1" and pairs[1].meta == {"direction": "stereo", "row": 1}
    # the file has one record with a quoted line break: row ids stay aligned with the index column
    assert [p.meta["row"] for p in pairs] == list(range(1508))


def test_crows_pairs_real_file_as_generic_pair_file(real_data_dir):
    pairs = load_pair_file(real_data_dir / "crows_pairs" / "crows_pairs_anonymized.csv", stereo_col="sent_more",
                           anti_col="sent_less", category_col="bias_type", id_col="", language="fr")
    assert len(pairs) == 1508 and pairs[0].language == "fr" and pairs[0].source_id == "crows_pairs_anonymized:0"
    assert pairs[0].meta["columns"]["stereo_antistereo"] == "stereo"


# ---------------------------------------------------------------------------------------------
# constructed files: one writer per adapter / format, the same bad-row kinds for all
# A record uses canonical keys stereo / anti / category; a key left out is a missing field.
# "\udce9" is written as the single byte 0xE9 (surrogateescape): invalid UTF-8.

BAD_KINDS = {
    "missing": (lambda r: {k: v for k, v in r.items() if k != "anti"}, r"missing field|fields where the header"),
    "empty": (lambda r: {**r, "anti": "  "}, "empty text"),
    "identical": (lambda r: {**r, "anti": r["stereo"]}, "identical"),
    "undecodable": (lambda r: {**r, "stereo": "Caf\udce9 owner " + r["stereo"]}, "undecodable"),
}


def _good(i: int) -> dict:
    return {"stereo": f"The man {i} is strong.", "anti": f"The woman {i} is strong.", "category": "gender"}


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return path


def _csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _crows_file(tmp_path, records):
    rows = [[str(i)] + [r[k] for k in ("stereo", "anti") if k in r] + ["stereo", r["category"]]
            for i, r in enumerate(records)]
    path = _write(tmp_path / "crows.csv", _csv_text(["", "sent_more", "sent_less", "stereo_antistereo",
                                                     "bias_type"], rows))
    return path, lambda p, **kw: load_crows_pairs(p, **kw), lambda i: i + 2


def _stereoset_item(i: int, r: dict) -> dict:
    item = {"type": "intrasentence", "target": "man", "bias_type": r["category"], "context": "The BLANK is strong.",
            "unrelated": f"The sofa {i} is strong."}
    item.update({{"stereo": "stereotype", "anti": "anti-stereotype"}[k]: r[k] for k in ("stereo", "anti") if k in r})
    return item


def _stereoset_flat_file(tmp_path, records):
    text = "\n".join(json.dumps(_stereoset_item(i, r), ensure_ascii=False) for i, r in enumerate(records)) + "\n"
    return _write(tmp_path / "flat.jsonl", text), lambda p, **kw: load_stereoset(p, **kw), lambda i: i + 1


def _stereoset_nested_file(tmp_path, records):
    items = []
    for i, r in enumerate(records):
        labels = {"stereo": "stereotype", "anti": "anti-stereotype"}
        sentences = [{"id": f"s{i}{k}", "sentence": r[k], "gold_label": labels[k]} for k in labels if k in r]
        sentences.append({"id": f"s{i}u", "sentence": f"The sofa {i} is strong.", "gold_label": "unrelated"})
        items.append({"id": f"item{i}", "target": "man", "bias_type": r["category"],
                      "context": "The BLANK is strong.", "sentences": sentences})
    body = ",\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    text = '{"version": "1.0", "data": {"intersentence": [],\n"intrasentence": [\n' + body + "\n]}}\n"
    return _write(tmp_path / "dev.json", text), lambda p, **kw: load_stereoset(p, **kw), lambda i: i + 3


def _mapped(r: dict, i: int) -> dict:
    """Canonical record in a pair file's own column names (tests the column mapping)."""
    names = {"stereo": "biased", "anti": "fair", "category": "axis"}
    return {"uid": f"u{i}", **{names[k]: v for k, v in r.items()}, "note": "extra"}


def _pair_loader(p, **kw):
    return load_pair_file(p, stereo_col="biased", anti_col="fair", category_col="axis", id_col="uid", **kw)


def _pair_jsonl_file(tmp_path, records):
    text = "\n".join(json.dumps(_mapped(r, i), ensure_ascii=False) for i, r in enumerate(records)) + "\n"
    return _write(tmp_path / "pairs.jsonl", text), _pair_loader, lambda i: i + 1


def _pair_json_file(tmp_path, records):
    text = "[\n" + ",\n".join(json.dumps(_mapped(r, i), ensure_ascii=False) for i, r in enumerate(records)) + "\n]"
    return _write(tmp_path / "pairs.json", text), _pair_loader, lambda i: i + 2


def _pair_delimited_file(tmp_path, records, suffix, delimiter):
    header = ["uid", "biased", "fair", "axis", "note"]
    rows = [[m[h] for h in header if h in m] for m in (_mapped(r, i) for i, r in enumerate(records))]
    path = _write(tmp_path / f"pairs.{suffix}", _csv_text(header, rows, delimiter))
    return path, _pair_loader, lambda i: i + 2


ADAPTERS = {
    "crows_pairs": _crows_file,
    "stereoset_flat": _stereoset_flat_file,
    "stereoset_nested": _stereoset_nested_file,
    "pair_jsonl": _pair_jsonl_file,
    "pair_json": _pair_json_file,
    "pair_csv": lambda t, r: _pair_delimited_file(t, r, "csv", ","),
    "pair_tsv": lambda t, r: _pair_delimited_file(t, r, "tsv", "\t"),
}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_clean_constructed_file_loads(tmp_path, adapter):
    path, load, _ = ADAPTERS[adapter](tmp_path, [_good(0), _good(1)])
    pairs = load(path)
    assert isinstance(pairs, LoadedPairs) and pairs.bad_rows == ()
    assert [(p.stereo, p.anti, p.category) for p in pairs] == [
        ("The man 0 is strong.", "The woman 0 is strong.", "gender"),
        ("The man 1 is strong.", "The woman 1 is strong.", "gender")]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_row_skipped_and_reported(tmp_path, caplog, adapter, kind):
    spoil, reason = BAD_KINDS[kind]
    path, load, line_of = ADAPTERS[adapter](tmp_path, [_good(0), spoil(_good(1)), _good(2)])
    with caplog.at_level(logging.WARNING, logger="fairgptq.datasets_adapters.validation"):
        pairs = load(path)
    # the surrounding pairs are intact: nothing shifted, nothing mis-paired
    assert [(p.stereo, p.anti) for p in pairs] == [("The man 0 is strong.", "The woman 0 is strong."),
                                                   ("The man 2 is strong.", "The woman 2 is strong.")]
    assert len(pairs.bad_rows) == 1
    bad = pairs.bad_rows[0]
    assert (bad.source, bad.line) == (str(path), line_of(1))
    assert re.search(reason, bad.reason), bad.reason
    assert f"{path}:{line_of(1)}" in caplog.text


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_row_refused_with_error_setting(tmp_path, adapter, kind):
    spoil, reason = BAD_KINDS[kind]
    path, load, line_of = ADAPTERS[adapter](tmp_path, [_good(0), spoil(_good(1))])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:{line_of(1)}: .*({reason})"):
        load(path, on_bad_row="error")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_file_without_any_good_row_is_an_error(tmp_path, adapter):
    path, load, _ = ADAPTERS[adapter](tmp_path, [BAD_KINDS["identical"][0](_good(0))])
    with pytest.raises(DataError, match="yields no pairs.*identical"):
        load(path)


@pytest.mark.parametrize("adapter", ["crows_pairs", "stereoset_flat", "pair_csv"])
def test_invalid_on_bad_row_setting(tmp_path, adapter):
    path, load, _ = ADAPTERS[adapter](tmp_path, [_good(0)])
    with pytest.raises(ConfigError, match="on_bad_row"):
        load(path, on_bad_row="ignore")


def test_invalid_json_line_is_one_bad_row(tmp_path):
    good = [json.dumps(_stereoset_item(i, _good(i))) for i in range(2)]
    path = _write(tmp_path / "s.jsonl", good[0] + "\n{not json\n\n" + good[1] + "\n[1, 2]\n")
    pairs = load_stereoset(path)
    assert len(pairs) == 2
    assert [(b.line, b.reason.split(" (")[0]) for b in pairs.bad_rows] == [(2, "invalid JSON"),
                                                                          (5, "expected a JSON object, got list")]


def test_csv_line_numbers_survive_multiline_records(tmp_path):
    text = (",sent_more,sent_less,stereo_antistereo,bias_type\n"
            '0,"Two\nlines he.","Two\nlines she.",stereo,gender\n'
            "1,Same.,Same.,stereo,gender\n"
            "2,He cooks.,She cooks.,antistereo,gender\n")
    pairs = load_crows_pairs(_write(tmp_path / "c.csv", text))
    assert [p.meta["row"] for p in pairs] == [0, 2] and pairs[0].stereo == "Two\nlines he."
    # record 0 spans lines 2-4, so record 1 starts on line 5
    assert [(b.line, b.reason) for b in pairs.bad_rows] == [(5, "identical stereo and anti texts")]


def test_crows_pairs_unknown_direction_and_missing_column(tmp_path):
    text = ",sent_more,sent_less,stereo_antistereo,bias_type\n0,He.,She.,maybe,gender\n1,He.,She.,stereo,gender\n"
    pairs = load_crows_pairs(_write(tmp_path / "c.csv", text))
    assert len(pairs) == 1 and "stereo_antistereo is 'maybe'" in pairs.bad_rows[0].reason
    no_type = _write(tmp_path / "d.csv", ",sent_more,sent_less,stereo_antistereo\n0,He.,She.,stereo\n")
    with pytest.raises(DataError, match=r"d.csv:2: missing field 'bias_type'"):
        load_crows_pairs(no_type, on_bad_row="error")


def test_undecodable_csv_header_is_an_error(tmp_path):
    path = _write(tmp_path / "h.csv", "st\udce9reo,anti\nA.,B.\n")
    with pytest.raises(DataError, match=r"h.csv:1: the header"):
        load_pair_file(path)


def test_stereoset_nested_duplicate_label_and_kind_filter(tmp_path):
    path, _, _ = _stereoset_nested_file(tmp_path, [_good(0), _good(1)])
    doc = json.loads(path.read_text())
    doc["data"]["intrasentence"][1]["sentences"][2]["gold_label"] = "stereotype"
    path.write_text(json.dumps(doc))
    pairs = load_stereoset(path)
    assert len(pairs) == 1 and pairs[0].source_id == "stereoset:intrasentence:item0"
    assert pairs.bad_rows[0].reason == "two sentences labelled 'stereotype'"
    with pytest.raises(DataError, match="yields no pairs"):
        load_stereoset(path, kind="intersentence")


def test_stereoset_bad_settings(tmp_path):
    path, _, _ = _stereoset_flat_file(tmp_path, [_good(0)])
    with pytest.raises(ConfigError, match=r"unknown StereoSet domain\(s\) \['genre'\]"):
        load_stereoset(path, domains=["gender", "genre"])
    with pytest.raises(ConfigError, match="kind"):
        load_stereoset(path, kind="intra")
    with pytest.raises(ConfigError, match="domains is empty"):
        load_stereoset(path, domains=[])
    assert len(load_stereoset(path, domains="gender")) == 1


def test_wrong_column_name_logs_a_sample_and_keeps_every_bad_row(tmp_path, caplog):
    rows = "".join(json.dumps({"stereo": f"He {i}.", "anti": f"She {i}."}) + "\n" for i in range(30))
    path = _write(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=r"no pairs; 30 bad row\(s\), first: .*p.jsonl:1: missing field 'anti_text'"):
        load_pair_file(path, anti_col="anti_text")
    good = _write(tmp_path / "q.jsonl", rows + json.dumps({"stereo": "A.", "anti_text": "B."}) + "\n")
    with caplog.at_level(logging.WARNING):
        pairs = load_pair_file(good, anti_col="anti_text")
    assert len(pairs) == 1 and len(pairs.bad_rows) == 30 and "... and 10 more" in caplog.text


def test_missing_default_file_names_path_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRGPTQ_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"crows_pairs_anonymized.csv not found.*FAIRGPTQ_DATA_DIR"):
        load_crows_pairs()
    with pytest.raises(DataError, match=r"stereoset_dev_flat.jsonl not found.*FAIRGPTQ_DATA_DIR"):
        load_stereoset()
    with pytest.raises(DataError, match="nope.jsonl not found"):
        load_pair_file(tmp_path / "nope.jsonl")


def test_pair_file_format_and_defaults(tmp_path):
    path = _write(tmp_path / "p.txt", '{"stereo": "Il est fort.", "anti": "Elle est forte."}\n')
    with pytest.raises(ConfigError, match="fmt="):
        load_pair_file(path)
    pairs = load_pair_file(path, fmt="jsonl", language="fr")
    assert pairs[0] == Pair("Il est fort.", "Elle est forte.", "unknown", "fr", "p:1")
    assert pairs[0].meta == {"line": 1, "columns": {}}
    with pytest.raises(ConfigError, match="unknown pair-file format"):
        load_pair_file(path, fmt="xml")
    with pytest.raises(DataError, match="expected a JSON array"):
        load_pair_file(_write(tmp_path / "o.json", '{"stereo": "a"}'))


def test_pair_file_keeps_long_narrative_texts(tmp_path):
    story = "Once upon a time, " + "the engineer walked home and thought about the day. " * 200
    path = _write(tmp_path / "stories.jsonl", json.dumps({"stereo": story + "He", "anti": story + "She"}) + "\n")
    pair = load_pair_file(path, default_category="narrative")[0]
    assert pair.stereo.endswith("He") and len(pair.stereo) > 10_000 and pair.category == "narrative"


# ---------------------------------------------------------------------------------------------
# hub loading (never touches the network: load_dataset is replaced)


def _fail_load(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)")


@pytest.mark.parametrize("loader", [lambda: load_crows_pairs(hub_name="nyu-mll/crows_pairs"),
                                    lambda: load_stereoset(hub_name="McGill-NLP/stereoset"),
                                    lambda: load_pair_file(hub_name="someone/pairs")])
def test_hub_unreachable_is_a_clear_error(monkeypatch, loader):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets, "load_dataset", _fail_load)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DataError, match=r"from the hub: no network\?.*(local|path=)"):
        loader()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"offline mode \(HF_DATASETS_OFFLINE set\)"):
        loader()


def test_hub_rows_map_like_file_rows(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    crows = Dataset.from_dict(
        {"id": [0, 1], "sent_more": ["He is strong.", "Same."], "sent_less": ["She is strong.", "Same."],
         "stereo_antistereo": [1, 0], "bias_type": [2, 2]},
        features=Features({"id": Value("int32"), "sent_more": Value("string"), "sent_less": Value("string"),
                           "stereo_antistereo": ClassLabel(names=["stereo", "antistereo"]),
                           "bias_type": ClassLabel(names=["race-color", "socioeconomic", "gender"])}))
    labels = ClassLabel(names=["anti-stereotype", "stereotype", "unrelated"])
    stereoset = Dataset.from_dict(
        {"id": ["abc"], "target": ["chess player"], "bias_type": ["profession"], "context": ["He was BLANK."],
         "sentences": [{"sentence": ["He was hispanic.", "He was asian.", "He was fox."], "gold_label": [0, 1, 2]}]},
        features=Features({"id": Value("string"), "target": Value("string"), "bias_type": Value("string"),
                           "context": Value("string"),
                           "sentences": Sequence({"sentence": Value("string"), "gold_label": labels})}))
    calls = []

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        return crows if "crows" in name else stereoset

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    pairs = load_crows_pairs(hub_name="nyu-mll/crows_pairs")
    assert len(pairs) == 1 and pairs[0].category == "gender" and pairs[0].meta == {"direction": "antistereo", "row": 0}
    assert pairs.bad_rows == (BadRow("hub:nyu-mll/crows_pairs", 2, "identical stereo and anti texts"),)
    (pair,) = load_stereoset(hub_name="McGill-NLP/stereoset")
    assert (pair.stereo, pair.anti, pair.meta["unrelated"]) == ("He was asian.", "He was hispanic.", "He was fox.")
    assert pair.source_id == "stereoset:intrasentence:abc"
    assert calls == [("nyu-mll/crows_pairs", None, "test"), ("McGill-NLP/stereoset", "intrasentence", "validation")]


# ---------------------------------------------------------------------------------------------
# sampling


def _pairs(counts: dict[str, int]) -> LoadedPairs:
    pairs = [Pair(f"s {c} {i}", f"a {c} {i}", c, source_id=f"t:{c}:{i}") for c, n in counts.items() for i in range(n)]
    return LoadedPairs(pairs, (BadRow("f", 3, "x"),), "f")


def test_sampling_is_deterministic_and_order_independent():
    pairs = _pairs({"race": 50, "gender": 30, "religion": 20})
    a, b = sample_pairs(pairs, 10, seed=3), sample_pairs(pairs, 10, seed=3)
    assert a == b and len(a) == 10
    assert set(sample_pairs(list(reversed(pairs)), 10, seed=3)) == set(a)
    assert sample_pairs(pairs, 10, seed=4) != a
    # the choice is a SHA-256 ranking: the same on every machine and Python version
    def rank(p: Pair) -> bytes:
        return hashlib.sha256(f"0\x00{p.source_id}\x00{p.stereo}\x00{p.anti}".encode()).digest()

    ranked = sorted(pairs, key=rank)
    assert set(sample_pairs(pairs, 3, seed=0, stratify=False)) == set(ranked[:3])


def test_sampling_stratified_proportional_allocation():
    pairs = _pairs({"race": 50, "gender": 30, "religion": 15, "age": 5})
    sample = sample_pairs(pairs, 21)
    assert Counter(p.category for p in sample) == {"race": 11, "gender": 6, "religion": 3, "age": 1}
    assert [pairs.index(p) for p in sample] == sorted(pairs.index(p) for p in sample)  # input order kept
    assert sample.bad_rows == pairs.bad_rows
    bigger = sample_pairs(pairs, 40)
    assert set(sample_pairs(pairs, 20)) <= set(bigger)


def test_sampling_edge_cases():
    pairs = _pairs({"race": 5, "gender": 5})
    assert sample_pairs(pairs) == pairs and sample_pairs(pairs, 100) == pairs
    assert len(sample_pairs(pairs, 3, stratify=False)) == 3
    with pytest.raises(ConfigError):
        sample_pairs(pairs, 0)


def test_sampling_real_stereoset_is_stratified(real_data_dir):
    sample = sample_pairs(load_stereoset(), 210, seed=0)
    assert Counter(p.category for p in sample) == {"race": 96, "profession": 81, "gender": 25, "religion": 8}


# ---------------------------------------------------------------------------------------------
# templates


def test_template_generation():
    pairs = generate_template_pairs(["{Group} is a good {occupation}.", "The {occupation} said {group} left."],
                                    [("he", "she"), ("the man", "the woman")], ["pilot", "surgeon"],
                                    category="gender")
    assert len(pairs) == 2 * 2 * 2 and pairs.bad_rows == ()
    assert (pairs[0].stereo, pairs[0].anti) == ("He is a good pilot.", "She is a good pilot.")
    assert pairs[2].stereo == "The man is a good pilot."
    assert pairs[0].source_id == "templates:t0:he/she:pilot" and pairs[0].meta["occupation"] == "pilot"
    assert generate_template_pairs(["{Group} is a good {occupation}."], [("he", "she")], ["pilot"]) == pairs[:1]
    assert len({p.source_id for p in pairs}) == len(pairs)
    without_occupation = generate_template_pairs(["{Group} cried."], [("women", "men")], category="gender")
    assert [(p.stereo, p.anti) for p in without_occupation] == [("Women cried.", "Men cried.")]


def test_default_templates_cover_both_directions():
    pairs = default_gender_template_pairs()
    assert len(pairs) == 3 * 8 * 2 and pairs == default_gender_template_pairs()
    nurse = next(p for p in pairs if p.meta["occupation"] == "nurse")
    assert " she " in f" {nurse.stereo} " and " he " in f" {nurse.anti} "


@pytest.mark.parametrize("templates, groups, occupations, match", [
    (["The {occupation} left."], [("he", "she")], ["pilot"], "no {group} slot"),
    (["{group} met {friend}."], [("he", "she")], ["pilot"], "unknown slot"),
    (["{group} left."], [("he", "he")], [], "same word"),
    (["{group} is a {occupation}."], [("he", "she")], [], "no occupations"),
    (["{group} left."], [], [], "no group word pairs"),
    (["{group left."], [("he", "she")], [], "not a valid format"),
])
def test_template_errors(templates, groups, occupations, match):
    with pytest.raises(ConfigError, match=match):
        generate_template_pairs(templates, groups, occupations)
