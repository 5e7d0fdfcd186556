"""A pipeline run on a model that does not fit in memory: sequential onloading, offloaded evaluation.

:func:`onload_decision` applies ``model.onload`` / ``model.max_memory`` (fairgptq.onload.choose_onload)
and says on the console and in the log which path it took and why.  :func:`execute_onloaded` is
the onloading counterpart of :func:`fairgptq.pipeline.runner.execute`: the same inputs (pair sets,
calibration, objectives, backend), quantization one decoder layer at a time straight into
``model/`` (the GPTQ checkpoint), evaluation through accelerate's disk offload, and the same
``results.json`` and ``report.md``, where ``model.onload`` records the choice and the memory figures.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from rich.console import Console

from ..core.model_loading import MODEL_DTYPES, resolve_model
from ..onload import OnloadDecision, choose_onload, load_float_offloaded, load_offloaded, quantize_onloaded
from ..registry import Registry
from . import build
from ..evaluation.items import record_evaluation
from .report import headline_metrics
from .schema import PipelineSpec

logger = logging.getLogger("fairgptq.pipeline")
EVALUATED_WITH = "accelerate disk offload (device_map: decoder layers on disk, the rest on cpu; offload folder)"


def onload_decision(spec: PipelineSpec, console: Console) -> OnloadDecision:
    """Which path quantizes ``spec.model`` (said on the console and in the log)."""
    m = spec.model
    decision = choose_onload(m.name, m.onload, m.max_memory, MODEL_DTYPES[m.dtype])
    if m.onload != "never" or decision.onload:
        console.print(f"  [bold]model path[/]: {decision.reason}")
        logger.info("model path: %s", decision.reason)
    return decision


def execute_onloaded(spec: PipelineSpec, resolved: dict, run_dir: Path, console: Console, decision: OnloadDecision,
                     registry: Registry, *, baseline: dict | None = None, point: dict | None = None) -> dict:
    """One run of a model too large for memory into ``run_dir`` (config.yaml already written); returns results."""
    from transformers import AutoTokenizer

    from .record import Step, write_card, write_run_record

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    step = Step(console, timings)
    from ..core.errors import ConfigError
    unsupported = [k for k, on in (("evaluation.pair_gap", spec.evaluation.pair_gap is not None),
                                   ("evaluation.plain_baseline", spec.evaluation.plain_baseline)) if on]
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)}: not available with sequential onloading yet (they need the "
                          f"float model in memory); remove them, or set model.onload: never")
    if spec.model.device != "cpu":
        raise ConfigError(f"model.device {spec.model.device!r}: sequential onloading runs on cpu for now; "
                          f"set model.device: cpu or model.onload: never")
    folder = resolve_model(spec.model.name).folder
    with step("load_model", f"reading the tokenizer of {spec.model.name} (weights stay on disk)"):
        tok = AutoTokenizer.from_pretrained(folder)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    with step("pairs", "building pair sets and calibration data"):
        inputs = build.run_inputs(spec, registry, tok)
    calibration, objectives, backend = inputs.calibration, inputs.objectives, inputs.backend
    calib_pairs = inputs.calibration_pairs
    tasks = spec.evaluation.tasks
    if spec.evaluation.float_baseline and tasks and baseline is None and point is None:
        from ..evaluation import evaluate
        with step("eval_float", f"evaluating the float model through disk offload: {', '.join(tasks)}"):
            offload = run_dir / ".offload-float"
            float_model, _ = load_float_offloaded(folder, offload, dtype=spec.model.dtype)
            baseline, _ = record_evaluation(evaluate(float_model, tok, tasks,
                                                     **build.evaluation_options(spec, calib_pairs)), run_dir / "float")
            del float_model
            shutil.rmtree(offload, ignore_errors=True)

    config = build.quant_config(spec)
    out = run_dir / "model"
    pair_info = inputs.pair_info
    with step("quantize", f"quantizing layer by layer from disk ({config.bits}-bit, group {config.group_size}, "
                          f"{len(objectives)} objective(s), backend {spec.backend.name})"):
        run = quantize_onloaded(folder, out, calibration, config, objectives=objectives, tokenizer=tok,
                                dtype=MODEL_DTYPES[spec.model.dtype], max_memory=spec.model.max_memory, backend=backend,
                                checkpoint_format=spec.export.checkpoint_format, spill_dir=run_dir,
                                storage_dtype=build.storage_dtype(spec),
                                fairgptq_meta={"pipeline": spec.name, "pair_sets": pair_info, "point": point})
    result = run.result
    modules = [r.to_dict() for r in result.reports]
    export = {"path": "model", "checkpoint_format": run.quantize_config["checkpoint_format"],
              "size_mb": sum(f.stat().st_size for f in out.iterdir()) / 2**20,
              "reload_check": "not run: written layer by layer, there is no in-memory model to compare with"}

    evaluation = None
    if tasks:
        from ..evaluation import evaluate
        with step("evaluate", f"evaluating through disk offload: {', '.join(tasks)}"):
            offload = run_dir / ".offload"
            model, _, _ = load_offloaded(out, offload, dtype=spec.model.dtype)
            evaluation, _ = record_evaluation(evaluate(model, tok, tasks, **build.evaluation_options(spec, calib_pairs)),
                                              run_dir)
            del model
            shutil.rmtree(offload, ignore_errors=True)

    timings["quantize_engine"] = round(result.seconds, 2)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    model_config = json.loads((out / "config.json").read_text())
    model_info = {"name": spec.model.name, "model_type": model_config.get("model_type"),
                  "n_layers": model_config.get("num_hidden_layers"), "dtype": spec.model.dtype,
                  "onload": {**decision.to_dict(), **run.memory(), "evaluated_with": EVALUATED_WITH if tasks else None}}
    results = write_run_record(spec, resolved, run_dir, point=point, model=model_info, pair_sets=pair_info,
                               result=result, backend=backend, modules=modules, timings=timings,
                               metrics=headline_metrics(evaluation), evaluation=evaluation, baseline=baseline,
                               export=export)
    write_card(out, spec.model.name, results)
    return results
