"""What every run writes and shows: its log file, timed steps, versions and the results record (report.md too).

Shared by a run (:mod:`.execute`, in memory or onloaded: :mod:`.model_paths`) and Ray's sweep units
(:mod:`.executors`), so a record has one shape whichever path made it.
"""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from rich.console import Console

from ..version import __version__
from . import build
from ..analysis.run_report import plot_delta_w, run_report, stability_summary
from .rundir import write_atomic
from ..run_record import RESULTS, check_run_record
from .schema import PipelineSpec

logger = logging.getLogger("fairgptq.pipeline")


def versions() -> dict[str, str]:
    import transformers
    return {"fairgptq": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(),
            "torch_threads": str(torch.get_num_threads())}


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Send fairgptq's log records (and Python warnings) to ``path`` for the duration of a run.

    Warnings go to the console too, once however many logs are nested (a sweep's and its
    point's): a file handler alone kept "2 of 4 pairs contribute nothing" out of sight.
    """
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    targets = [logging.getLogger("fairgptq"), logging.getLogger("py.warnings")]
    old_levels = [t.level for t in targets]
    logging.captureWarnings(True)
    screen = None
    if not any(isinstance(h, _ConsoleWarnings) for h in targets[0].handlers):
        screen = _ConsoleWarnings()
        targets[0].addHandler(screen)
    for t in targets:
        t.addHandler(handler)
        t.setLevel(logging.INFO)
    try:
        yield
    finally:
        for t, level in zip(targets, old_levels):
            t.removeHandler(handler)
            t.setLevel(level)
        if screen is not None:
            targets[0].removeHandler(screen)
        handler.close()


class _ConsoleWarnings(logging.StreamHandler):
    """fairgptq's warnings during a run, on stderr as ``warning: ...`` (the run log has the details).

    Warnings only: a failure's record carries its traceback for run.log, and the command prints the
    failure itself as one message.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("warning: %(message)s"))
        self.addFilter(lambda record: record.levelno == logging.WARNING)


class Step:
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


def logged(fn, *args, **kwargs):
    """Call ``fn``; a failure is written to the run log (with traceback) before it propagates."""
    try:
        return fn(*args, **kwargs)
    except BaseException:
        logger.exception("run failed")
        raise


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
    check_run_record(results, f"the record of {run_dir.name}")  # a writer's mistake fails here, not in a reader
    write_atomic(run_dir / RESULTS, json.dumps(results, indent=2, default=str) + "\n")
    write_atomic(run_dir / "report.md", run_report(results))
    return results


def gap_metrics(pair_gap: dict | None) -> dict[str, float]:
    """The pair gap's pooled ratios as headline metrics (``pair_gap.ratio_targeted`` only where a term applied)."""
    if not pair_gap:
        return {}
    return {f"pair_gap.{k}": v for k, v in pair_gap.items() if k.startswith("ratio_") and v is not None}


def write_card(folder: Path, model_name: str, results: dict) -> None:
    """The exported checkpoint's README.md with the run's evaluation (numbers from ``results``)."""
    from ..export import read_quantize_config
    from ..export.model_card import model_card
    from ..model_loading import describe_source
    base_model, source_kind = describe_source(model_name)
    text = model_card(read_quantize_config(folder), model_name=Path(model_name).name or model_name,
                      base_model=base_model, results=results, source_kind=source_kind)
    write_atomic(folder / "README.md", text)

