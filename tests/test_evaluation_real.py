"""Evaluation suite on the real SmolLM2-135M: the GPTQ perplexity figure, StereoSet's leakage guard,
and batch-size invariance.  (Agreement with lm-evaluation-harness: test_evaluation_lm_eval.py.)"""
from __future__ import annotations

import math

import pytest
import torch

from fairgptq.core.errors import ConfigError
from fairgptq.datasets_adapters.stereoset import load_stereoset
from fairgptq.evaluation import evaluate, evaluate_stereoset, evaluate_wikitext2, score_sentences
from fairgptq.datasets_adapters.splits import split_items

pytestmark = pytest.mark.real_model

@pytest.mark.slow
def test_wikitext2_perplexity_matches_a_straightforward_reference(smollm2_base, real_data_dir):
    """The scorer against the obvious computation, on the first two 2048-token windows.  SOURCES.md's
    16k-token figure (17.05) is checked by tests/test_real_gptq.py, which scores the float model anyway."""
    model, tok = smollm2_base
    ours = evaluate_wikitext2(model, tok, max_tokens=4096, progress=False)
    # straightforward reference: read the file, join with blank lines, 2 windows, the model's own mean loss each
    text = "\n\n".join((real_data_dir / "wikitext2" / "test.txt").read_text(encoding="utf-8").split("\n"))
    ids = tok(text, return_tensors="pt").input_ids[0][:4096]
    with torch.no_grad():
        losses = [float(model(w[None], labels=w[None]).loss) for w in ids.view(2, 2048)]
    reference = math.exp(sum(losses) / len(losses))
    assert (ours["n_windows"], ours["seqlen"]) == (2, 2048)
    assert ours["perplexity"] == pytest.approx(reference, rel=1e-3)


def test_scores_do_not_depend_on_batch_size(smollm2_base, real_data_dir):
    model, tok = smollm2_base
    sentences = [p.stereo for p in load_stereoset()[:24]] + ["Hi.", "A much longer sentence, so that the batch "
                                                                    "holds rows of very different token lengths."]
    one = [s.logprob for s in score_sentences(model, tok, sentences, batch_size=1, progress=False)]
    many = [s.logprob for s in score_sentences(model, tok, sentences, batch_size=13, progress=False)]
    assert many == pytest.approx(one, abs=2e-3)


def test_stereoset_holdout_and_leakage_guard(smollm2_base, real_data_dir):
    model, tok = smollm2_base
    items = load_stereoset(kind="intrasentence")
    calibration = split_items(items, "calibration", 0.5)
    with pytest.raises(ConfigError, match="overlaps the calibration"):
        evaluate_stereoset(model, tok, items, calibration=calibration, limit=60, progress=False)
    r = evaluate_stereoset(model, tok, items, split="holdout", calibration=calibration, limit=60, progress=False)
    assert r["overlap"]["n_overlapping"] == 0 and r["n"] == 60
    assert 30 < r["SS"] < 80 and r["LMS"] > 60  # a trained LM prefers meaningful sentences to unrelated ones
    assert set(r["by_domain"]) <= {"gender", "profession", "race", "religion"}


def test_suite_on_real_model_small(smollm2_base, real_data_dir):
    model, tok = smollm2_base
    res = evaluate(model, tok, ["crows_pairs", "boolq"], limit=20, progress=False)
    crows = res["tasks"]["crows_pairs"]
    assert crows["n"] == 20 and crows["scoring"] == "lm_eval" and 0 <= crows["pct_stereotype"] <= 100
    assert res["tasks"]["boolq"]["n"] == 20 and 0 <= res["tasks"]["boolq"]["acc"] <= 1
