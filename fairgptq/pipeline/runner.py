"""Running a pipeline: a single run, or a sweep of runs (points, repeats, shards, Ray), and its summary.

A single run goes into one atomic run directory (:mod:`.execute`).  A sweep directory holds
``points/<name>`` (each an atomic run directory, skipped when already complete, so an interrupted
sweep resumes), the float baseline when asked for, and a summary report with the plots.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from ..model_loading import load_model
from . import build
from .executors import ExecutorSettings, SweepIncomplete, SweepUnit, run_on_ray
from ..registry import pipeline_registry, registry_with, scoped
from .execute import execute
from .loading import Pipeline, validate
from .messages import PipelineError
from .objective_settings import config_is_plain
from .preflight import name_problems, hardware_problems, memory_problems, output_problems
from .record import logged, logger, run_log, versions
from ..analysis.run_report import plot_sweep, sweep_report
from .reuse import ReusablePoints
from ..run_record import RunRecord, read_run_record
from ..evaluation.items import record_evaluation
from .inputs import sweep_inputs
from .rundir import (FinishedMeanwhile, atomic_run_dir, check_target, is_complete, mark_complete, remove_other_points,
                     sweep_dir, write_atomic)
from ..analysis.seeds import group_statistics, groups_report, plot_groups, unit_comparisons, units_report


def run_pipeline(pipeline: Pipeline, out: str | Path | None = None, *, force: bool = False,
                 console: Console | None = None, shard: tuple[int, int] | None = None,
                 reuse: list[str | Path] = ()) -> Path:
    """Run a validated pipeline (or its sweep); returns the run directory.

    ``shard=(i, n)`` runs only the sweep points dealt to shard i of n (:meth:`SweepPoint.in_shard`),
    so n processes (or machines sharing the folder) can split a sweep; whichever finishes last writes
    the summary.
    """
    with scoped(pipeline.registry or pipeline_registry(pipeline.spec.plugins)):
        return _run(pipeline, out, force=force, console=console, shard=shard, reuse=reuse)


def _run(pipeline: Pipeline, out: str | Path | None, *, force: bool, console: Console | None,
         shard: tuple[int, int] | None, reuse: list[str | Path]) -> Path:
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
        logged(execute, spec, pipeline.resolved(), tmp, console)
    return target


def _run_sweep(pipeline: Pipeline, target: Path, force: bool, console: Console,
               shard: tuple[int, int] | None = None, reuse: list[str | Path] = ()) -> Path:
    index, count = shard or (0, 1)

    # where the points run does not change what they compute: a sweep resumes under another executor
    resolved = {k: v for k, v in pipeline.resolved().items() if k != "executor"}
    config_text = yaml.safe_dump(resolved, sort_keys=False)
    spec = pipeline.spec
    inputs = sweep_inputs([spec, *(validate(p.raw, pipeline.source, environment=False) for p in pipeline.points)])
    reusable = ReusablePoints(list(reuse), inputs, versions()) if reuse else None
    with sweep_dir(target, config_text, inputs, force=force, shared=shard is not None,
                   protect=[pipeline.folder]) as resumed, run_log(target / "sweep.log"):
        if resumed:
            console.print(f"[yellow]resuming the interrupted sweep in {target}[/]")
        from .model_paths import onload_decision
        onloads = onload_decision(spec, console).onload  # then every point reads the model layer by layer itself
        shared = None
        cache: dict = {}  # float-model work that every point shares (the pair-gap yardstick)
        baseline = _load_json(target / "baseline.json")
        if baseline is None and reusable is not None and spec.evaluation.float_baseline:
            baseline = reusable.baseline(resolved, target)
        remote: list[SweepUnit] = []  # units for a non-local executor, run after the loop
        looked_up = matched = 0  # --reuse: points to run, and those found finished elsewhere
        for point in pipeline.points:
            folder = target / "points" / point.name
            if not point.in_shard(index, count):
                continue
            if is_complete(folder):
                console.print(f"[green]✓[/] {point.name}: already complete, skipped")
                logger.info("point %s complete, skipped", point.name)
                continue
            console.rule(f"sweep point {point.index + 1}/{len(pipeline.points)}: {point.name}")
            point_spec = validate(point.raw, pipeline.source, environment=False)
            source = reusable.find(point_spec.model_dump(mode="json")) if reusable is not None else None
            looked_up += reusable is not None
            matched += source is not None
            if source is not None:
                try:
                    with atomic_run_dir(folder, force=True, keep_complete=True) as tmp:
                        reusable.copy(source, tmp)
                except FinishedMeanwhile:
                    console.print(f"[green]✓[/] {point.name}: completed by another process meanwhile; taken")
                    continue
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
            try:
                with atomic_run_dir(folder, force=True, keep_complete=True) as tmp, run_log(tmp / "run.log"):
                    logged(execute, point_spec, point_spec.model_dump(mode="json"), tmp, console,
                           model_and_tok=shared, baseline=baseline, point=point.values, cache=cache)
            except FinishedMeanwhile:
                console.print(f"[green]✓[/] {point.name}: completed by another process meanwhile; taken, not rerun")
                logger.info("point %s completed by another process meanwhile, taken", point.name)
        if reusable is not None:  # said also when nothing matched: a silent --reuse looks like one that worked
            console.print(f"--reuse: {matched} of {looked_up} point(s) to run matched a finished point of "
                          f"{', '.join(map(str, reuse))}" + ("" if matched or not looked_up else
                                                             " (none had the same resolved settings, input files "
                                                             "and versions)"))
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
    summary_points = [_point_summary(p, read_run_record(target / "points" / p.name)) for p in pipeline.points]
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


def _point_summary(point, record: RunRecord) -> dict:
    summary = record.quantization.summary
    return {"name": point.name, "group": point.group, "seed": point.seed, "values": point.values,
            "plain": config_is_plain(record.config), "metrics": record.metrics,
            "max_delta_w_rel": summary["max_delta_w_rel"], "overshoots": summary["overshoots"],
            "seconds": record.timings["total"]}


def check_before_run(pipeline: "Pipeline", target: Path) -> None:
    """At the start of ``run``: the hardware, the real --out and every sweep point's folder under it."""
    names = name_problems(target)
    if names:  # a name the file system refuses: say so before touching the path
        raise PipelineError(f"--out {str(target)[:80]}", names)
    check_target(target, force=True, protect=[pipeline.folder])
    registry = registry_with(pipeline.spec.plugins)
    problems = (hardware_problems(pipeline.spec, registry)
                + memory_problems(pipeline.spec, against="available", registry=registry)
                + output_problems(target, [p.name for p in pipeline.points]))
    if problems:
        raise PipelineError(f"--out {target}", problems)
