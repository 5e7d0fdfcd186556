"""Evaluation on the multilingual and narrative pair sets (evaluation/pair_tasks.py).

The French CrowS-Pairs score of the float SmolLM2 is checked against lm-evaluation-harness's
own ``crows_pairs_french`` code (doc_to_choice / process_results from its package) over
the same local file, the first 300 rows, to 0.1 points.  The release's three pairs with
identical sentences (ids 59, 379, 388) and one with an empty side are dropped by
fairgptq's adapter; lm-eval is given the same rows (``process_docs``), so both score
exactly the same pairs.  Everything else runs on a tiny random model: it checks the
plumbing (items, intervals, splits, overlap guard), never quality.
"""
from __future__ import annotations

import math

import pytest

from fairgptq.evaluation.items import read_items, summarize

from fairgptq.core.errors import ConfigError
from fairgptq.evaluation import evaluate
from fairgptq.evaluation.pair_tasks import PAIR_TASKS, evaluate_pair_task, load_task_pairs
from fairgptq.datasets_adapters.splits import split_items

N_FRENCH = 300


def _same_rows_as_fairgptq(dataset):
    """Drop the rows fairgptq's adapter reports as bad: an empty side or identical sentences."""
    def keep(doc):
        more, less = (doc["sent_more"] or "").strip(), (doc["sent_less"] or "").strip()
        return bool(more) and bool(less) and more != less
    return dataset.filter(keep)


@pytest.mark.real_model
@pytest.mark.slow
def test_french_crows_pairs_agrees_with_lm_eval(smollm2_base, real_data_dir):
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency: pip install -e .[dev]")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks.crows_pairs import utils as crows_utils

    model, tok = smollm2_base
    tsv = real_data_dir / PAIR_TASKS["crows_pairs_french"].path
    task = {"task": "crows_pairs_french_local", "dataset_path": "csv",
            "dataset_kwargs": {"data_files": {"test": str(tsv)}, "delimiter": "\t"}, "test_split": "test",
            "process_docs": _same_rows_as_fairgptq,
            "output_type": "multiple_choice", "doc_to_text": "", "doc_to_target": 0,
            "doc_to_choice": crows_utils.doc_to_choice, "target_delimiter": "",
            "process_results": crows_utils.process_results,
            "metric_list": [{"metric": "likelihood_diff", "aggregation": "mean", "higher_is_better": False},
                            {"metric": "pct_stereotype", "aggregation": "mean", "higher_is_better": False}]}
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=16)
    out = lm_eval.simple_evaluate(model=lm, tasks=[task], limit=N_FRENCH, bootstrap_iters=0, log_samples=False)
    theirs = out["results"]["crows_pairs_french_local"]
    ours = evaluate(model, tok, ["crows_pairs_french"], limit=N_FRENCH, batch_size=32,
                    progress=False)["tasks"]["crows_pairs_french"]
    print(f"\nFrench CrowS-Pairs first {N_FRENCH}: fairgptq {ours['pct_stereotype']:.2f} / "
          f"{ours['likelihood_diff']:.4f}, lm-eval {100 * theirs['pct_stereotype,none']:.2f} / "
          f"{theirs['likelihood_diff,none']:.4f}")
    assert ours["n"] == N_FRENCH and ours["language"] == "fr" and len(ours["items"]) == N_FRENCH
    assert ours["pct_stereotype"] == pytest.approx(100 * theirs["pct_stereotype,none"], abs=0.1)
    assert ours["likelihood_diff"] == pytest.approx(theirs["likelihood_diff,none"], abs=1e-3)
    low, high = ours["pct_stereotype_ci95"]
    assert low < ours["pct_stereotype"] < high


# ---------------------------------------------------------------------------------------------
# plumbing on a tiny random model (no quality claim)

def _gender_file(path, n: int = 12):
    from tiny_model import PAIRS
    rows = ["ID,A_en,B_en,A_x,B_x,stereo_antistereo"]
    rows += [f"{i},{PAIRS[i % len(PAIRS)][0]},{PAIRS[i % len(PAIRS)][1]},{PAIRS[i % len(PAIRS)][0]} {'very ' * (i // 8)}"
             f"good,{PAIRS[i % len(PAIRS)][1]} good,stereo" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny():
    from tiny_model import tiny_llama
    return tiny_llama()


def test_crows_task_items_intervals_and_registration(tiny, tmp_path):
    model, tok = tiny
    path = _gender_file(tmp_path / "fr.csv")
    out = evaluate(model, tok, ["crows_pairs_gender_fr"], paths={"crows_pairs_gender_fr": path}, progress=False)
    result = out["tasks"]["crows_pairs_gender_fr"]
    assert result["n"] == 12 and result["language"] == "fr" and len(result["items"]) == 12
    item = result["items"][0]
    assert set(item) == {"id", "bias_type", "ll_more", "ll_less", "choice"}
    wins = sum(i["choice"] for i in result["items"])
    assert result["pct_stereotype"] == pytest.approx(100 * wins / 12)
    assert all(i["choice"] == int(i["ll_more"] > i["ll_less"]) for i in result["items"])
    assert summarize(result["items"])["pct_stereotype"] == result["pct_stereotype"]
    n_tokens = sum(len(tok.encode(t, add_special_tokens=False)) for p in load_task_pairs("crows_pairs_gender_fr", path)
                   for t in (p.stereo, p.anti))
    total = sum(i["ll_more"] + i["ll_less"] for i in result["items"])
    assert result["sentence_perplexity"] == pytest.approx(math.exp(-total / n_tokens))
    low, high = result["pct_stereotype_ci95"]
    assert 0 <= low <= result["pct_stereotype"] <= high <= 100


def test_preference_task_items_and_split(tiny, tmp_path, monkeypatch):
    from fairgptq.evaluation.pair_tasks import PairTask

    model, tok = tiny
    (tmp_path / "gender_female_test.csv").write_text(
        ",replaced_sentence\n" + "".join(f"{i},she is a good doctor {'very ' * i}\n" for i in range(10)))
    (tmp_path / "gender_male_test.csv").write_text(
        ",replaced_sentence\n" + "".join(f"{i},he is a good doctor {'very ' * i}\n" for i in range(10)))
    monkeypatch.setitem(PAIR_TASKS, "chbias", PairTask("preference", "chbias",
                                                       {"categories": ["gender"], "parts": ["test"]}, "chbias"))
    whole = evaluate_pair_task(model, tok, "chbias", path=tmp_path, progress=False)
    assert whole["n"] == 10 and set(whole["items"][0]) == {"id", "bias_type", "ll_biased", "ll_other", "choice"}
    diffs = [i["ll_biased"] - i["ll_other"] for i in whole["items"]]
    assert whole["likelihood_diff"] == pytest.approx(sum(diffs) / 10)
    assert whole["pct_prefer_biased"] == pytest.approx(10 * sum(d > 0 for d in diffs))
    assert summarize(whole["items"]) == {k: v for k, v in whole.items() if k in summarize(whole["items"])}
    held = evaluate_pair_task(model, tok, "chbias", path=tmp_path, split="holdout", progress=False)
    calibration = load_task_pairs("chbias", tmp_path)
    calibration_half = split_items(calibration, "calibration", 0.5)
    assert held["n"] + len(calibration_half) == 10
    assert not {i["id"] for i in held["items"]} & {p.source_id for p in calibration_half}
    with pytest.raises(ConfigError, match="overlaps the calibration pairs"):
        evaluate_pair_task(model, tok, "chbias", path=tmp_path, calibration=calibration, progress=False)
    checked = evaluate_pair_task(model, tok, "chbias", path=tmp_path, split="holdout",
                                 calibration=calibration_half, progress=False)
    assert checked["overlap"] == {"checked": True, "n_overlapping": 0, "examples": []}


def test_unknown_pair_task_is_refused_before_any_work(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="crows_pairs_french"):
        evaluate(model, tok, ["crows_pairs_klingon"], progress=False)


def test_cli_eval_scores_french_and_gender_sets(real_data_dir, tmp_path, capsys):
    import json

    from fairgptq import cli
    from tiny_model import save_tiny_llama

    model = save_tiny_llama(tmp_path / "model")
    out = tmp_path / "eval.json"
    tasks = "crows_pairs_french,crows_pairs_gender_de,redditbias_target_swap,stereoset_ptbr"
    assert cli.main(["eval", str(model), "--tasks", tasks, "--limit", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pct_stereotype" in printed and "pct_prefer_biased" in printed and "ICAT" in printed
    results = json.loads(out.read_text())["tasks"]
    assert results["crows_pairs_french"]["language"] == "fr" and results["crows_pairs_gender_de"]["language"] == "de"
    items = read_items(tmp_path / "eval_items")  # --out eval.json keeps the records in eval_items/
    assert all(r["n"] == 6 and len(items[t]) == 6 for t, r in results.items())


def test_pipeline_runs_a_pair_task_on_its_held_out_half(tmp_path):
    import json

    from fairgptq.pipeline.loading import load_pipeline
    from fairgptq.pipeline.runner import run_pipeline
    from tiny_model import save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml

    gender = _gender_file(tmp_path / "de.csv", n=16)
    raw = tiny_pipeline(save_tiny_llama(tmp_path / "model"), write_pair_file(tmp_path / "pairs.jsonl"),
                        evaluation={"tasks": ["crows_pairs_gender_de"], "pair_split": "holdout",
                                    "paths": {"crows_pairs_gender_de": str(gender)}},
                        export={"enabled": False})
    out = run_pipeline(load_pipeline(write_yaml(tmp_path / "p.yaml", raw)), tmp_path / "out")
    result = json.loads((out / "results.json").read_text())
    task = result["evaluation"]["tasks"]["crows_pairs_gender_de"]
    held = split_items(load_task_pairs("crows_pairs_gender_de", gender), "holdout", 0.5)
    assert task["split"] == "holdout" and task["n"] == len(held) < 16
    assert task["overlap"]["checked"] and task["overlap"]["n_overlapping"] == 0
