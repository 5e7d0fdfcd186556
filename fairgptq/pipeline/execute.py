"""One run of a pipeline (no sweep) into its run directory: load, build, quantize, evaluate, export, record.

The body is the same whether the model is held in memory or read layer by layer from disk; what
differs is the :class:`~fairgptq.pipeline.model_paths.ModelPath` it is given (:mod:`.model_paths`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
import yaml
from rich.console import Console

from ..evaluation.items import record_evaluation
from ..registry import registry_with
from . import build
from .model_paths import model_path
from .objective_settings import config_is_plain
from .plain_baseline import compare_with_float, compare_with_plain, evaluate_plain_gptq
from .record import Step, gap_metrics, write_card, write_run_record
from ..analysis.run_report import headline_metrics
from .rundir import write_atomic
from .schema import PipelineSpec


def execute(spec: PipelineSpec, resolved: dict, run_dir: Path, console: Console, *, model_and_tok=None,
            baseline: dict | None = None, point: dict | None = None, cache: dict | None = None) -> dict:
    """One complete run into ``run_dir`` (already created); returns the results record.

    ``model_and_tok``: a sweep's float model, copied here (it stays in memory); ``baseline`` and
    ``point``: a sweep's float evaluation and this point's values; ``cache``: float-model work the
    sweep's points share (the pair-gap yardstick)."""
    from ..evaluation import evaluate
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    step = Step(console, timings)
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    torch.manual_seed(spec.seed)
    registry = registry_with(spec.plugins)
    path = model_path(spec, console, run_dir, model_and_tok)
    path.refuse_unsupported(registry)

    with step("load_model", path.load_message):
        tok = path.load()
    with step("pairs", "building pair sets and calibration data"):
        inputs = build.run_inputs(spec, registry, tok)
        for name, info in inputs.pair_info.items():
            console.print(f"  pair set [bold]{name}[/]: {info['n']} pairs from {info['source']} "
                          f"(sha256/16 {info['sha256_16']}, {info['bad_rows']} bad rows skipped)")
    calib_pairs = inputs.calibration_pairs
    tasks = spec.evaluation.tasks
    eval_options = build.evaluation_options(spec, calib_pairs)
    float_items: dict = {}
    if spec.evaluation.float_baseline and tasks and baseline is None and point is None:  # sweeps: once, outside
        with step("eval_float", f"evaluating the float model: {', '.join(tasks)}"), path.float_model() as model:
            baseline, float_items = record_evaluation(evaluate(model, tok, tasks, **eval_options), run_dir / "float")
    gap = None
    if spec.evaluation.pair_gap is not None:
        with step("pair_gap_float", "held-out pair gaps of the float model"), path.float_model() as model:
            gap = build.pair_gap(spec, registry, model, tok, calib_pairs, cache)
    targeted = _targeted_by(inputs.objectives, gap)

    plain, plain_items, plain_gap = None, {}, None
    if spec.evaluation.plain_baseline and tasks and spec.objectives and point is None:  # sweeps have α = 0 points
        with step("plain_gptq", "plain GPTQ (every term off) for comparison: quantizing and evaluating"), \
                path.float_model() as model:
            plain_eval, plain_gap = evaluate_plain_gptq(spec, registry, inputs.sets, model, tok, inputs.calibration,
                                                        calib_pairs, gap, targeted)
            plain, plain_items = record_evaluation(plain_eval, run_dir / "plain")

    config = build.quant_config(spec)
    with step("quantize", f"{path.quantize_message} ({config.bits}-bit, group {config.group_size}, "
                          f"{len(inputs.objectives)} objective(s), backend {spec.backend.name})"):
        result = path.quantize(inputs, registry, point)
    export = path.export(inputs, result, point, step)
    modules = [r.to_dict() for r in result.reports]

    pair_gap, evaluation, items = None, None, {}
    if gap is not None or tasks:
        with step("evaluate", f"evaluating: {', '.join(tasks) or 'held-out pair gaps'}"), \
                path.quantized_model() as model:
            if gap is not None:
                pair_gap = gap.measure(model, targeted)
            if tasks:
                evaluation, items = record_evaluation(evaluate(model, tok, tasks, **eval_options), run_dir)
    vs_plain = compare_with_plain(plain_items, items, plain_gap, pair_gap) if plain_items and evaluation else None
    vs_float = compare_with_float(float_items, items) if float_items and evaluation else None

    timings["quantize_engine"] = round(result.seconds, 2)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    results = write_run_record(spec, resolved, run_dir, point=point, model={"name": spec.model.name,
                                                                             **path.model_info()},
                               pair_sets=inputs.pair_info, result=result, backend=inputs.backend,
                               modules=modules, timings=timings,
                               metrics={**headline_metrics(evaluation), **gap_metrics(pair_gap)},
                               evaluation=evaluation, pair_gap=pair_gap, plain=config_is_plain(resolved, registry),
                               baseline=baseline, export=export, plain_baseline=plain, vs_plain=vs_plain,
                               vs_float=vs_float)
    if export is not None:  # the card's numbers are results.json's: written once they are known
        write_card(run_dir / "model", spec.model.name, results)
    return results


def _targeted_by(objectives: list, gap) -> Callable[[int, str], bool]:
    """Whether any objective adds a term to (layer, role): the modules a pair gap counts as targeted."""
    n_layers = gap.n_layers if gap is not None else 0
    return lambda layer, role: any(o.applies(layer, role, n_layers) for o in objectives)
