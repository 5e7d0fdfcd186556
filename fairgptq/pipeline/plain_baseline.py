"""The plain-GPTQ reference of a run: the same quantization without the fairness term, evaluated.

"Does Fair-GPTQ beat plain GPTQ?" is the question every report answers, so a run can quantize
the float model a second time with every objective's term switched off (``evaluation.plain_baseline``),
as each objective's own settings model says (``without_term``: α 0 for fair_pairs, target 0 for
likelihood_pairs).  That keeps everything else identical: the same calibration data builds H (the
pair sentences when the objective says so), the same grid, damping and backend; only the term is
gone.  It costs one more quantization and evaluation (about 2-3 minutes for the demo on 2 cores).
"""
from __future__ import annotations

import copy
from typing import Any

from ..core.driver import quantize_model
from ..core.objective import TokenBatch
from ..export import snap_to_checkpoint_precision
from ..registry import Registry
from . import build
from .objective_settings import registry_for, without_term
from .schema import PipelineSpec


def plain_spec(spec: PipelineSpec, registry: Registry | None = None) -> PipelineSpec:
    """``spec`` with every objective's term switched off, as each objective's settings model says."""
    registry = registry or registry_for(spec.plugins)
    objectives = [o.model_copy(update={"params": without_term(registry, o.name, o.params)}) for o in spec.objectives]
    return spec.model_copy(update={"objectives": objectives})


def evaluate_plain_gptq(spec: PipelineSpec, registry: Registry, sets: dict, float_model, tok,
                        calibration: list[TokenBatch] | None, calibration_pairs: list,
                        gap=None, targeted=None) -> tuple[dict[str, Any], dict | None]:
    """Quantize a copy of ``float_model`` with plain GPTQ as ``spec`` sets it up and evaluate it.

    The evaluated model is snapped to float16 scales like the run's own, so the two differ only
    by the fairness term.  Returns the evaluation (with item records) and, when the run measures
    the held-out pair gap (``gap``), plain GPTQ's gaps with the run's ``targeted`` modules marked.
    """
    from ..evaluation import evaluate

    plain = plain_spec(spec, registry)
    model = copy.deepcopy(float_model)
    backend = build.backend(plain, registry)
    result = quantize_model(model, calibration, build.quant_config(plain), objectives=build.objectives(
        plain, registry, sets), tokenizer=tok, backend=backend, progress=True, architectures=registry.architectures())
    snap_to_checkpoint_precision(model, result, build.storage_dtype(plain))
    evaluation = evaluate(model, tok, plain.evaluation.tasks, **build.evaluation_options(plain, calibration_pairs))
    pair_gap = gap.measure(model, targeted) if gap is not None else None
    del model
    return evaluation, pair_gap


def compare_with_float(float_items: dict[str, list[dict]], items: dict[str, list[dict]]) -> list[dict]:
    """The run against the float model, item by item (the model card's "− float" column)."""
    from ..analysis.comparison import compare_items
    return [row for task in items if task in float_items
            for row in compare_items(task, float_items[task], items[task], labels=("float", "this run"))]


def compare_with_plain(plain_items: dict[str, list[dict]], items: dict[str, list[dict]],
                       plain_gap: dict | None, pair_gap: dict | None) -> list[dict]:
    """The run against its plain-GPTQ reference, item by item (fairgptq.analysis.comparison), and on the pair gap."""
    from ..analysis.comparison import compare_items, pair_gap_rows
    rows = [row for task in items if task in plain_items
            for row in compare_items(task, plain_items[task], items[task], labels=("plain GPTQ", "this run"))]
    return rows + pair_gap_rows(plain_gap, pair_gap, "no test (one seed)")
