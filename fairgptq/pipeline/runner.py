"""Running a pipeline: load, build calibration and objectives, quantize, evaluate, export, record.

A single run goes into one atomic run directory.  A sweep directory holds ``points/<name>``
(each an atomic run directory, skipped when already complete, so an interrupted sweep
resumes), the float baseline when asked for, and a summary report with the α plots.
"""
from __future__ import annotations

import copy
import json
import logging
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml
from rich.console import Console

from .. import __version__
from ..core.driver import quantize_model
from ..core.model_loading import load_model
from ..export import export_checkpoint, fairgptq_record, load_gptq_checkpoint, snap_to_checkpoint_precision
from ..registry import default_registry
from . import build
from .executors import ExecutorSettings, SweepIncomplete, SweepUnit, run_on_ray
from .loading import Pipeline
from .plain_baseline import compare_with_plain, evaluate_plain_gptq
from .report import headline_metrics, plot_delta_w, plot_sweep, run_report, stability_summary, sweep_report
from .reuse import ReusablePoints
from ..evaluation.items import record_evaluation
from .inputs import sweep_inputs
from .preflight import check_before_run
from .rundir import atomic_run_dir, is_complete, mark_complete, remove_other_points, sweep_dir, write_atomic
from .schema import PipelineSpec
from .objective_settings import config_is_plain
from .seeds import group_statistics, groups_report, plot_groups, unit_comparisons, units_report

logger = logging.getLogger("fairgptq.pipeline")
VERIFY_PROMPT = "The doctor said that the nurse would bring the results of the test in the morning."


def versions() -> dict[str, str]:
    import transformers
    return {"fairgptq": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(),
            "torch_threads": str(torch.get_num_threads())}


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Send fairgptq's log records (and Python warnings) to ``path`` for the duration of a run."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    targets = [logging.getLogger("fairgptq"), logging.getLogger("py.warnings")]
    old_levels = [t.level for t in targets]
    logging.captureWarnings(True)
    for t in targets:
        t.addHandler(handler)
        t.setLevel(logging.INFO)
    try:
        yield
    finally:
        for t, level in zip(targets, old_levels):
            t.removeHandler(handler)
            t.setLevel(level)
        handler.close()


class _Step:
    """Times a named step, logs it and shows it on the console."""

    def __init__(self, console: Console, timings: dict[str, float]) -> None:
        self.console, self.timings = console, timings

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        self.console.print(f"[bold cyan]▶[/] {what}")
        logger.info("start: %s", what)
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        logger.info("done: %s (%.1f s)", what, self.timings[name])


def _model_info(model) -> dict:
    cfg = model.config
    return {"model_type": cfg.model_type, "n_layers": getattr(cfg, "num_hidden_layers", None),
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}


def _verify_export(model, tok, folder: Path) -> dict:
    """Reload the checkpoint on CPU and compare logits with the in-memory quantized model."""
    loaded, _, _ = load_gptq_checkpoint(folder, device="cpu")
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
    step = _Step(console, timings)
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
        sets = build.pair_sets(spec, registry)
        for name, ps in sets.items():
            logger.info("pair set %s: %s", name, ps.info)
            console.print(f"  pair set [bold]{name}[/]: {ps.info['n']} pairs from {ps.info['source']} "
                          f"(sha256/16 {ps.info['sha256_16']}, {ps.info['bad_rows']} bad rows skipped)")
        calibration = build.text_calibration(spec, tok)
        objectives = build.objectives(spec, registry, sets)
        backend = registry.create("backends", spec.backend.name, **spec.backend.params)
    calib_pairs = [p for o in spec.objectives if o.pairs for p in sets[o.pairs].pairs]
    tasks = spec.evaluation.tasks
    if spec.evaluation.float_baseline and tasks and baseline is None and point is None:  # sweeps: once, outside
        from ..evaluation import evaluate
        with step("eval_float", f"evaluating the float model: {', '.join(tasks)}"):
            baseline, _ = record_evaluation(evaluate(model, tok, tasks, **build.evaluation_options(spec, calib_pairs)),
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
                                backend=backend, progress=True)
        snap_to_checkpoint_precision(model, result)
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
                                   fairgptq_meta={"pipeline": spec.name, "pair_sets": pair_info, "point": point})
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

    timings["quantize_engine"] = round(result.seconds, 2)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    model_info = {"name": spec.model.name, **_model_info(model),
                  "onload": onload.to_dict() if onload is not None else None}
    return write_run_record(spec, resolved, run_dir, point=point, model=model_info,
                            pair_sets={name: ps.info for name, ps in sets.items()}, result=result, backend=backend,
                            modules=modules, timings=timings,
                            metrics={**headline_metrics(evaluation), **gap_metrics(pair_gap)}, evaluation=evaluation,
                            pair_gap=pair_gap, plain=config_is_plain(resolved, registry), baseline=baseline, export=export,
                            plain_baseline=plain, vs_plain=vs_plain)


def write_run_record(spec: PipelineSpec, resolved: dict, run_dir: Path, *, point: dict | None, model: dict,
                     pair_sets: dict, result, backend, modules: list[dict], timings: dict, **fields) -> dict:
    """results.json and report.md of one run (in memory or onloaded): the common record plus ``fields``."""
    results = {
        "fairgptq_version": __version__, "pipeline": spec.name, "point": point, "config": resolved, "model": model,
        "pair_sets": pair_sets, "objectives": result.objectives,
        "backend": backend.describe() if hasattr(backend, "describe") else {"name": spec.backend.name},
        "quantization": {"config": build.quant_config(spec).to_dict(), "seconds": round(result.seconds, 2),
                         "summary": stability_summary(modules), "modules": modules},
        **fields, "timings": timings, "versions": versions(),
        "seeds": {"pipeline": spec.seed, **{f"pairs.{n}": p.seed for n, p in spec.calibration.pairs.items()},
                  **({"text": spec.calibration.text.seed} if spec.calibration.text else {})},
        "plots": [],
    }
    if plot_delta_w(modules, run_dir / "delta_w.png"):
        results["plots"].append("delta_w.png")
    write_atomic(run_dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    write_atomic(run_dir / "report.md", run_report(results))
    return results


def _targeted_by(objectives: list, gap) -> Callable[[int, str], bool]:
    """Whether any objective adds a term to (layer, role): the modules a pair gap counts as targeted."""
    n_layers = gap.n_layers if gap is not None else 0
    return lambda layer, role: any(o.applies(layer, role, n_layers) for o in objectives)


def gap_metrics(pair_gap: dict | None) -> dict[str, float]:
    """The pair gap's pooled ratios as headline metrics (``pair_gap.ratio_targeted`` only where a term applied)."""
    if not pair_gap:
        return {}
    return {f"pair_gap.{k}": v for k, v in pair_gap.items() if k.startswith("ratio_") and v is not None}


def run_pipeline(pipeline: Pipeline, out: str | Path | None = None, *, force: bool = False,
                 console: Console | None = None, shard: tuple[int, int] | None = None,
                 reuse: list[str | Path] = ()) -> Path:
    """Run a validated pipeline (or its sweep); returns the run directory.

    ``shard=(i, n)`` runs only the sweep points whose index is i mod n, so n processes (or
    machines sharing the folder) can split a sweep; whichever finishes last writes the summary.
    """
    console = console or Console()
    spec = pipeline.spec
    target = Path(out or spec.output or Path("runs") / spec.name)
    check_before_run(pipeline, target)
    if pipeline.points:
        return _run_sweep(pipeline, target, force, console, shard, reuse)
    if reuse:
        from ..core.errors import ConfigError
        raise ConfigError("--reuse takes finished points of other sweeps; this pipeline has no sweep section")
    if shard is not None or spec.executor.name != "local":
        from ..core.errors import ConfigError
        what = "--shard splits" if shard is not None else f"executor {spec.executor.name} runs"
        raise ConfigError(f"{what} the points of a sweep; this pipeline has no sweep section")
    with atomic_run_dir(target, force=force, protect=[pipeline.folder]) as tmp, run_log(tmp / "run.log"):
        logger.info("pipeline %s from %s", spec.name, pipeline.source)
        _logged(execute, spec, pipeline.resolved(), tmp, console)
    return target


def _logged(fn, *args, **kwargs):
    """Call ``fn``; a failure is written to the run log (with traceback) before it propagates."""
    try:
        return fn(*args, **kwargs)
    except BaseException:
        logger.exception("run failed")
        raise


def _run_sweep(pipeline: Pipeline, target: Path, force: bool, console: Console,
               shard: tuple[int, int] | None = None, reuse: list[str | Path] = ()) -> Path:
    from .loading import validate

    index, count = shard or (0, 1)

    # where the points run does not change what they compute: a sweep resumes under another executor
    resolved = {k: v for k, v in pipeline.resolved().items() if k != "executor"}
    config_text = yaml.safe_dump(resolved, sort_keys=False)
    spec = pipeline.spec
    inputs = sweep_inputs(pipeline)
    reusable = ReusablePoints(list(reuse), inputs, versions()) if reuse else None
    with sweep_dir(target, config_text, inputs, force=force, shared=shard is not None,
                   protect=[pipeline.folder]) as resumed, run_log(target / "sweep.log"):
        if resumed:
            console.print(f"[yellow]resuming the interrupted sweep in {target}[/]")
        from .onloaded import onload_decision
        onloads = onload_decision(spec, console).onload  # then every point reads the model layer by layer itself
        shared = None
        cache: dict = {}  # float-model work that every point shares (the pair-gap yardstick)
        baseline = _load_json(target / "baseline.json")
        if baseline is None and reusable is not None and spec.evaluation.float_baseline:
            baseline = reusable.baseline(resolved, target)
        remote: list[SweepUnit] = []  # units for a non-local executor, run after the loop
        for point in pipeline.points:
            folder = target / "points" / point.name
            if point.index % count != index:
                continue
            if is_complete(folder):
                console.print(f"[green]✓[/] {point.name}: already complete, skipped")
                logger.info("point %s complete, skipped", point.name)
                continue
            console.rule(f"sweep point {point.index + 1}/{len(pipeline.points)}: {point.name}")
            point_spec = validate(point.raw, pipeline.source, environment=False)
            source = reusable.find(point_spec.model_dump(mode="json")) if reusable is not None else None
            if source is not None:
                with atomic_run_dir(folder, force=True) as tmp:
                    reusable.copy(source, tmp)
                console.print(f"[green]✓[/] {point.name}: the same run is finished in {source}; copied, not rerun")
                logger.info("point %s reused from %s", point.name, source)
                continue
            wants_baseline = (point_spec.evaluation.float_baseline and point_spec.evaluation.tasks
                              and baseline is None and index == 0)  # one shard evaluates the float model
            if shared is None and not onloads and (spec.executor.name == "local" or wants_baseline):
                shared = load_model(spec.model.name, spec.model.dtype, spec.model.device)
            if wants_baseline and shared is not None:
                from ..evaluation import evaluate
                console.print("[bold cyan]▶[/] evaluating the float model (once per sweep)")
                baseline, _ = record_evaluation(evaluate(shared[0], shared[1], point_spec.evaluation.tasks,
                                                         **build.evaluation_options(point_spec, [])), target / "float")
                write_atomic(target / "baseline.json", json.dumps(baseline, indent=2, default=str))
            if spec.executor.name != "local":
                remote.append(SweepUnit(point.name, folder, point.raw, point.values, str(pipeline.source)))
                continue
            with atomic_run_dir(folder, force=True) as tmp, run_log(tmp / "run.log"):
                _logged(execute, point_spec, point_spec.model_dump(mode="json"), tmp, console,
                        model_and_tok=shared, baseline=baseline, point=point.values, cache=cache)
        if remote:
            shared = None  # the tasks load the model themselves
            failures = run_on_ray(remote, ExecutorSettings(**spec.executor.model_dump()), console, baseline)
            if failures:
                raise SweepIncomplete(f"{len(failures)} of {len(remote)} sweep point(s) failed under Ray: "
                                      + "; ".join(f"{f.name} ({f.error})" for f in failures)
                                      + f". The others are complete in {target}; run the same command again to "
                                        f"resume only the failed point(s).")
        pending = [p.name for p in pipeline.points if not is_complete(target / "points" / p.name)]
        if pending:
            console.print(f"[yellow]shard {index}/{count} done; {len(pending)} point(s) left to other shards:[/] "
                          f"{', '.join(pending)}")
            return target
        write_sweep_summary(pipeline, target, baseline or _load_json(target / "baseline.json"))
        remove_other_points(target / "points", [p.name for p in pipeline.points])
        mark_complete(target)
    return target


def write_sweep_summary(pipeline: Pipeline, target: Path, baseline: dict | None) -> dict:
    """results.json, report.md and plots of a sweep whose points are all complete (also to redo a summary)."""
    spec = pipeline.spec
    summary_points = [_point_summary(p, _load_json(target / "points" / p.name / "results.json"))
                      for p in pipeline.points]
    keys = spec.sweep.keys() if spec.sweep else []
    unit_comparisons(summary_points, target)
    summary = {"pipeline": spec.name, "keys": keys, "baseline": baseline, "points": summary_points,
               "plots": []}
    report_extra = units_report(summary_points)
    if spec.repeats is not None:
        summary["seeds"] = spec.repeats.seeds
        summary["groups"] = group_statistics(summary_points)
        report_extra = groups_report(summary["groups"]) + "\n" + report_extra
        if plot_groups(summary["groups"], target / "seeds.png"):
            summary["plots"].append("seeds.png")
            report_extra += "\n![means over seeds](seeds.png)\n"
    elif keys and plot_sweep(summary_points, keys, target / "sweep.png", baseline):
        summary["plots"].append("sweep.png")
    write_atomic(target / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    write_atomic(target / "report.md", sweep_report(summary) + "\n" + report_extra)
    return summary


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _point_summary(point, results: dict) -> dict:
    return {"name": point.name, "group": point.group, "seed": point.seed, "values": point.values,
            "plain": config_is_plain(results["config"]), "metrics": results["metrics"],
            "max_delta_w_rel": results["quantization"]["summary"]["max_delta_w_rel"],
            "overshoots": results["quantization"]["summary"]["overshoots"], "seconds": results["timings"]["total"]}
