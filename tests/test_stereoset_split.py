"""StereoSet's stricter hold-out: split by target term (every item of a term on one side), beside the split by
item id, which stays what it was."""
from __future__ import annotations

import hashlib

import pytest

from fairgptq.core.errors import ConfigError
from fairgptq.contract import Pair
from fairgptq.datasets_adapters.stereoset import load_stereoset
from fairgptq.datasets_adapters.splits import split_items
from fairgptq.evaluation.stereoset import StereoSetOptions


@pytest.fixture(scope="module")
def stereoset(real_data_dir):
    return load_stereoset()


def _terms(pairs):
    return {" ".join(p.meta["target"].lower().split()) for p in pairs}


def test_no_target_term_crosses_the_split(stereoset):
    held = split_items(stereoset, "holdout", 0.5, by="target")
    calibration = split_items(stereoset, "calibration", 0.5, by="target")
    assert held and calibration and not _terms(held) & _terms(calibration)
    assert 0.3 < len(_terms(held)) / len(_terms(stereoset)) < 0.7
    # every calibration-side item is in the calibration part; held-out items leave only for a repeated sentence
    assert len(calibration) + len(held) <= len(stereoset)
    assert len(stereoset) - len(calibration) - len(held) < 0.02 * len(stereoset)


def test_the_split_by_item_is_unchanged(stereoset):
    """The default split hashes the item id exactly as before: recomputed here from sha256 of the id."""
    def held_by_id(p: Pair) -> bool:
        return int.from_bytes(hashlib.sha256(p.source_id.encode()).digest()[:8], "big") / 2.0 ** 64 < 0.5
    assert split_items(stereoset, "calibration", 0.5) == [p for p in stereoset if not held_by_id(p)]
    assert split_items(stereoset, "calibration", 0.5, by="item") == split_items(stereoset, "calibration", 0.5)
    held = split_items(stereoset, "holdout", 0.5)
    assert held == split_items(stereoset, "holdout", 0.5, by="item")
    assert {p.source_id for p in held} <= {p.source_id for p in stereoset if held_by_id(p)}
    # the item split shares target terms across its halves: the reason for the stricter one
    assert _terms(held) & _terms(split_items(stereoset, "calibration", 0.5))


def test_a_pair_without_a_target_term_cannot_be_split_by_target():
    with pytest.raises(ConfigError, match="no target term"):
        split_items([Pair("a b", "a c", "x", source_id="1")], "holdout", 0.5, by="target")
    with pytest.raises(ConfigError, match="split_by"):
        split_items([], "holdout", 0.5, by="word")
    assert StereoSetOptions().stereoset_split_by == "item"
