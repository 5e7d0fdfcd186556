"""One run of a pipeline (no sweep) into its run directory: load, build, quantize, evaluate, export, record.

A model larger than memory takes the onloaded path (:mod:`.onloaded`), which records the same way.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import torch
import yaml
from rich.console import Console

from ..core.driver import quantize_model
from ..core.model_loading import load_model
from ..export import export_checkpoint, fairgptq_record, load_gptq_checkpoint, snap_to_checkpoint_precision
from ..registry import default_registry
from . import build
from ..evaluation.items import record_evaluation
from .objective_settings import config_is_plain
from .plain_baseline import compare_with_float, compare_with_plain, evaluate_plain_gptq
from .record import Step, gap_metrics, write_card, write_run_record
from .report import headline_metrics
from .rundir import write_atomic
from .schema import PipelineSpec

VERIFY_PROMPT = "The doctor said that the nurse would bring the results of the test in the morning."


def _model_info(model) -> dict:
    cfg = model.config
    return {"model_type": cfg.model_type, "n_layers": getattr(cfg, "num_hidden_layers", None),
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}


def _verify_export(model, tok, folder: Path) -> dict:
    """Reload the checkpoint on CPU at the in-memory model's dtype and compare logits with it."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    loaded, _, _ = load_gptq_checkpoint(folder, device="cpu", dtype=dtype)
    ids = tok(VERIFY_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        a = model(ids.to(next(model.parameters()).device)).logits.float().cpu()
        b = loaded(ids).logits.float()
    diff = float((a - b).abs().max())
    return {"identical_logits": bool(torch.equal(a, b)), "max_abs_logit_diff": diff, "tokens": int(ids.numel())}


def execute(spec: PipelineSpec, resolved: dict, run_dir: Path, console: Console, *, model_and_tok=None,
            baseline: dict | None = None, point: dict | None = None, cache: dict | None = None) -> dict:
    """One complete run into ``run_dir`` (already created); returns the results record."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    step = Step(console, timings)
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    torch.manual_seed(spec.seed)
    registry = default_registry()
    for mod in spec.plugins:
        registry.register_module(mod)
    onload = None
    if model_and_tok is None:
        from .onloaded import execute_onloaded, onload_decision
        onload = onload_decision(spec, console)
        if onload.onload:
            return execute_onloaded(spec, resolved, run_dir, console, onload, registry, baseline=baseline, point=point)

    with step("load_model", f"loading model {spec.model.name} ({spec.model.dtype}, {spec.model.device})"):
        if model_and_tok is None:
            model, tok = load_model(spec.model.name, spec.model.dtype, spec.model.device)
        else:
            model, tok = copy.deepcopy(model_and_tok[0]), model_and_tok[1]
    with step("pairs", "building pair sets and calibration data"):
        inputs = build.run_inputs(spec, registry, tok)
        for name, info in inputs.pair_info.items():
            console.print(f"  pair set [bold]{name}[/]: {info['n']} pairs from {info['source']} "
                          f"(sha256/16 {info['sha256_16']}, {info['bad_rows']} bad rows skipped)")
    sets, calibration, objectives, backend = inputs.sets, inputs.calibration, inputs.objectives, inputs.backend
    calib_pairs = inputs.calibration_pairs
    tasks = spec.evaluation.tasks
    float_items: dict = {}
    if spec.evaluation.float_baseline and tasks and baseline is None and point is None:  # sweeps: once, outside
        from ..evaluation import evaluate
        with step("eval_float", f"evaluating the float model: {', '.join(tasks)}"):
            baseline, float_items = record_evaluation(evaluate(model, tok, tasks, **build.evaluation_options(spec, calib_pairs)),
                                            run_dir / "float")
    gap = None
    if spec.evaluation.pair_gap is not None:
        with step("pair_gap_float", "held-out pair gaps of the float model"):
            gap = build.pair_gap(spec, registry, model, tok, calib_pairs, cache)

    plain, plain_items, plain_gap = None, {}, None
    if spec.evaluation.plain_baseline and tasks and spec.objectives and point is None:  # sweeps have α = 0 points
        with step("plain_gptq", "plain GPTQ (every α = 0) for comparison: quantizing and evaluating"):
            plain_eval, plain_gap = evaluate_plain_gptq(spec, registry, sets, model, tok, calibration, calib_pairs,
                                                        gap, _targeted_by(objectives, gap))
            plain, plain_items = record_evaluation(plain_eval, run_dir / "plain")

    config = build.quant_config(spec)
    with step("quantize", f"quantizing ({config.bits}-bit, group {config.group_size}, "
                          f"{len(objectives)} objective(s), backend {spec.backend.name})"):
        result = quantize_model(model, calibration, config, objectives=objectives, tokenizer=tok,
                                backend=backend, progress=True, architectures=registry.architectures())
        snap_to_checkpoint_precision(model, result, build.storage_dtype(spec))
    modules = [r.to_dict() for r in result.reports]
    pair_gap = None
    if gap is not None:
        pair_gap = gap.measure(model, _targeted_by(objectives, gap))

    export = None
    if spec.export.enabled:
        with step("export", "exporting the GPTQ checkpoint"):
            folder = run_dir / "model"
            pair_info = {name: ps.info for name, ps in sets.items()}
            qc = export_checkpoint(model, tok, result, folder, checkpoint_format=spec.export.checkpoint_format,
                                   dtype=build.storage_dtype(spec), model_name=spec.model.name, fairgptq_meta={"pipeline": spec.name, "pair_sets": pair_info, "point": point})
            export = {"path": "model", "checkpoint_format": qc["checkpoint_format"],
                      "size_mb": sum(f.stat().st_size for f in folder.iterdir()) / 2**20,
                      "grouping": fairgptq_record(qc)["grouping"]}
        if spec.export.verify:
            with step("verify_export", "reloading the checkpoint and comparing logits"):
                check = _verify_export(model, tok, folder)
            export.update(check)
            export["reload_check"] = ("identical logits" if check["identical_logits"]
                                      else f"max |Δlogit| = {check['max_abs_logit_diff']:.3g}")

    evaluation = None
    if tasks:
        from ..evaluation import evaluate
        with step("evaluate", f"evaluating: {', '.join(tasks)}"):
            evaluation, items = record_evaluation(evaluate(model, tok, tasks,
                                                           **build.evaluation_options(spec, calib_pairs)), run_dir)
    vs_plain = compare_with_plain(plain_items, items, plain_gap, pair_gap) if plain_items and evaluation else None
    vs_float = compare_with_float(float_items, items) if float_items and evaluation else None

    timings["quantize_engine"] = round(result.seconds, 2)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    model_info = {"name": spec.model.name, **_model_info(model),
                  "onload": onload.to_dict() if onload is not None else None}
    results = write_run_record(spec, resolved, run_dir, point=point, model=model_info,
                               pair_sets={name: ps.info for name, ps in sets.items()}, result=result, backend=backend,
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
