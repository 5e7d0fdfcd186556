"""The README's five-line example, on the tiny model: quantize with an objective, export, reload, evaluate.

The same calls as the README (there on SmolLM2): the top-level API is enough, and what is exported is
exactly the model in memory afterwards.
"""
from __future__ import annotations

import torch

import fairgptq
from fairgptq import (LikelihoodPairObjective, QuantConfig, export_checkpoint, load_gptq_checkpoint, load_model,
                      load_pairs, quantize_model)
from fairgptq.core.objective import TokenBatch

from tiny_model import save_tiny_llama, write_pair_file


def test_quantize_export_and_reload_in_five_lines(tmp_path):
    model, tok = load_model(str(save_tiny_llama(tmp_path / "tiny")))
    pairs = load_pairs("pair_file", path=str(write_pair_file(tmp_path / "p.jsonl")), category_col="category")
    objective = LikelihoodPairObjective(pairs, target=0.25, max_length=64)
    ids = tok([" ".join(["the man is a good doctor and she was very kind"] * 3)] * 8, return_tensors="pt").input_ids
    result = quantize_model(model, [TokenBatch(ids, torch.ones_like(ids))], QuantConfig(bits=4, group_size=32),
                            objectives=[objective], tokenizer=tok, progress=False)
    export_checkpoint(model, tok, result, tmp_path / "out")
    loaded, _, qc = load_gptq_checkpoint(tmp_path / "out", dtype="float32")
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert qc["meta"]["fairgptq"]["objectives"][0]["name"] == "likelihood_pairs"
    assert len(pairs) == 8 and {"load_model", "evaluate", "LikelihoodPairObjective"} <= set(fairgptq.__all__)
