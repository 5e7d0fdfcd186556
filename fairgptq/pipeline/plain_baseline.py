"""The plain-GPTQ reference of a run: the same quantization without the fairness term, evaluated.

"Does Fair-GPTQ beat plain GPTQ?" is the question every report answers, so a run can quantize
the float model a second time with every objective's α set to 0 (``evaluation.plain_baseline``).
α = 0 keeps everything else identical: the same calibration data builds H (the pair sentences
when ``calibrate_with_pairs``), the same grid, damping and backend; only H_bias is gone.  It
costs one more quantization and evaluation (about 2-3 minutes for the demo on 2 cores).
"""
from __future__ import annotations

import copy
from typing import Any

from ..core.driver import quantize_model
from ..core.objective import TokenBatch
from ..export import snap_to_checkpoint_precision
from ..registry import Registry
from . import build
from .schema import PipelineSpec


def plain_spec(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` with every objective's α (and per-layer α) set to 0."""
    objectives = [o.model_copy(update={"alpha": 0.0, "layer_alpha": None}) for o in spec.objectives]
    return spec.model_copy(update={"objectives": objectives})


def evaluate_plain_gptq(spec: PipelineSpec, registry: Registry, sets: dict, float_model, tok,
                        calibration: list[TokenBatch] | None, calibration_pairs: list) -> dict[str, Any]:
    """Quantize a copy of ``float_model`` with plain GPTQ as ``spec`` sets it up and evaluate it.

    The evaluated model is snapped to float16 scales like the run's own, so the two differ only
    by the fairness term.
    """
    from ..evaluation import evaluate

    plain = plain_spec(spec)
    model = copy.deepcopy(float_model)
    backend = build.create(registry, "backends", plain.backend.name, plain.backend.params)
    result = quantize_model(model, calibration, build.quant_config(plain), objectives=build.objectives(
        plain, registry, sets), tokenizer=tok, backend=backend, progress=True)
    snap_to_checkpoint_precision(model, result)
    evaluation = evaluate(model, tok, plain.evaluation.tasks, **build.evaluation_options(plain, calibration_pairs))
    del model
    return evaluation
