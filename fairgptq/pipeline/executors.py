"""Where sweep units run: in this process (``local``, the default) or as Ray tasks (``ray``).

An executor gets a list of :class:`SweepUnit` — each one complete run that writes into its own
atomic run directory — and runs them; it never touches the sweep folder otherwise, so the
sweep's layout, resume (complete units are skipped before an executor sees them) and summary
are the same whichever executor ran the units.  A unit is whatever the sweep iterates over
(a point, or a point and a seed): only its folder and its validated settings matter here.

The Ray executor submits one task per unit to an existing cluster (``address``) or a local
one; each task loads the model itself and runs the ordinary single-run code.  A unit whose task
fails or dies is reported with its error and the others go on; its folder stays incomplete, so
re-running the sweep runs only it.  Tasks are not retried (``max_retries: 0`` by default): a
deterministic failure would just recur, and a re-run resumes anything else.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from ..core.errors import ConfigError

logger = logging.getLogger("fairgptq.pipeline")


@dataclass(frozen=True)
class SweepUnit:
    """One run of a sweep: its name, its run directory, its settings (a pipeline without sweep) and values."""

    name: str
    folder: Path
    raw: dict
    values: dict[str, Any]
    source: str = "pipeline"


@dataclass
class UnitFailure:
    name: str
    error: str


class SweepIncomplete(RuntimeError):
    """Some units of a sweep failed (a failure, not bad input); the others are complete and a re-run resumes
    only the failed ones."""


@dataclass
class ExecutorSettings:
    """The pipeline's ``executor`` section (fairgptq.pipeline.schema.ExecutorSpec), as plain values."""

    name: str = "local"
    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = 0
    runtime_env: dict[str, Any] = field(default_factory=dict)


def run_unit(unit: SweepUnit, baseline: dict | None) -> str:
    """Run one unit into its atomic folder in this process (loading the model itself); returns its name.

    This is the body of a Ray task; it is the same code a single ``fairgptq run`` uses.
    """
    from ..registry import scoped
    from .execute import execute
    from .loading import own_registry, validate
    from .record import logged, run_log
    from .rundir import FinishedMeanwhile, atomic_run_dir

    registry = own_registry(unit.raw)
    spec = validate(unit.raw, unit.source, environment=False, registry=registry)
    console = Console(stderr=True)
    try:
        with scoped(registry), atomic_run_dir(unit.folder, force=True, keep_complete=True) as tmp, \
                run_log(tmp / "run.log"):
            logged(execute, spec, spec.model_dump(mode="json"), tmp, console, baseline=baseline, point=unit.values)
    except FinishedMeanwhile:  # another shard finished it since the sweep looked: its copy stands
        pass
    return unit.name


def run_on_ray(units: list[SweepUnit], settings: ExecutorSettings, console: Console,
               baseline: dict | None = None, *, unit_fn: Callable[[SweepUnit, dict | None], str] = run_unit
               ) -> list[UnitFailure]:
    """Run ``units`` as Ray tasks; returns the failures (each also reported), after every task ended."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor ray needs Ray: pip install 'fairgptq[ray]' (or pip install ray)") from None
    if not ray.is_initialized():  # else: the caller's Ray (a notebook, a test) is used as it is
        if settings.address:
            ray.init(address=settings.address)
        else:
            ray.init()
    options: dict[str, Any] = {"runtime_env": settings.runtime_env} if settings.runtime_env else {}
    task = ray.remote(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus,
                      max_retries=settings.max_retries, **options)(unit_fn)
    pending = {task.remote(u, baseline): u for u in units}
    console.print(f"[bold cyan]▶[/] {len(units)} sweep unit(s) submitted to Ray "
                  f"({settings.num_cpus} CPU / {settings.num_gpus} GPU each)")
    failures: list[UnitFailure] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        unit = pending.pop(done[0])
        try:
            ray.get(done[0])
            console.print(f"[green]✓[/] {unit.name} done")
            logger.info("unit %s done (ray)", unit.name)
        except Exception as e:  # the task raised, or its worker died: report it, the rest go on
            message = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            failures.append(UnitFailure(unit.name, message))
            console.print(f"[red]✗[/] {unit.name} failed: {message}")
            logger.error("unit %s failed (ray): %s", unit.name, e)
    return failures
