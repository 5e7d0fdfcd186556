"""``target: auto`` on the real SmolLM2-135M: its choice does not depend on the thread count.

A file of its own so that pytest-xdist runs it beside tests/test_real_likelihood.py (whose module
fixtures quantize four models) instead of after them.  Only the float-model passes run (gradient,
float Hessians, probe), not the quantization that would follow.

The model is SmolLM2-135M-Instruct de-quantized from a Q4_1 GGUF (already on a 4-bit grid).
"""
from __future__ import annotations

import pytest
import torch

from fairgptq import QuantConfig
from fairgptq.backends import CpuBackend
from fairgptq.core.architectures import arch_for
from fairgptq.datasets_adapters.sampling import sample_pairs
from fairgptq.datasets_adapters.splits import split_items
from fairgptq.datasets_adapters.stereoset import load_stereoset
from fairgptq.datasets_adapters.wikitext import calibration_windows
from fairgptq.objectives.likelihood_pairs import LikelihoodPairObjective

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CONFIG = QuantConfig(bits=4, group_size=128, sym=True)


@pytest.mark.parametrize("metric", ["identity", "hessian"])
def test_auto_chooses_the_same_target_at_threads_1_and_2(smollm2_base, real_data_dir, metric):
    """``target: auto`` reads its curve on the float model before any layer is solved, so only the
    summation order of the passes (the backend's threads) can change it: the same target, or a neighbour
    on the grid where two grid points tie within that order's noise.  Only the float-model passes run
    (gradient, float Hessians, probe), not the quantization that would follow."""
    from fairgptq.core.driver import _targets, check_roles, decoder_layers
    from fairgptq.core.score_gradient import GradientPasses
    model, tok = smollm2_base
    pairs = sample_pairs(split_items(load_stereoset(), "calibration", 0.5), n=128, seed=0)
    # one window of 512 tokens: the control (its text loss) and, for the hessian metric, the float H both
    # read only the first calibration batch
    windows = calibration_windows(tok, n=1, seqlen=512, seed=0, batch_size=1)
    spec = arch_for(model)
    layers = decoder_layers(model, spec)
    chosen = {}
    for threads in (1, 2):
        # 128 pairs, a 5-point grid, one 512-token control window: the property (one choice whatever the threads)
        # needs no more, and each grid point is a pass over the validation pairs and the control batch
        obj = LikelihoodPairObjective(pairs, target="auto", metric=metric, max_length=64,
                                      auto_grid=[0.0, 0.5, 1.0, 2.0, 3.0])
        backend = CpuBackend(threads=threads)
        with torch.no_grad(), backend.activate():
            passes = GradientPasses(model, spec, len(layers), [obj], tok,
                                    _targets(layers, spec, check_roles(spec, None)), torch.device("cpu"))
            passes.on_float_model(windows, backend, CONFIG)
        auto = obj.describe()["auto"]
        print(f"\n{metric}, threads {threads}: chose {auto['chosen']}; curve "
              + ", ".join(f"{c['target']}: {c['validation_pct_stereotype']:.1f} % (ppl x{c['perplexity_ratio']:.4f})"
                          for c in auto["curve"]))
        chosen[threads] = auto["grid"].index(auto["chosen"])
    assert abs(chosen[1] - chosen[2]) <= 1  # the same target within the grid's resolution
