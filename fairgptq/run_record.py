"""The shape of a run's ``results.json``: one typed model, checked when it is written and when it is read.

A run record is read back by sweeps (summaries, references, reuse), ``fairgptq report`` /
``compare --groups``, the model card and people's own scripts.  When it was a free-form dict, a
renamed key surfaced as a KeyError deep in a summary, after the compute.  :class:`RunRecord`
names every field a reader may rely on with its type; :func:`write_run_record`
(:mod:`.record`) builds it, so a writer that drops or mistypes a field fails at once, and
:func:`read_run_record` gives readers attributes instead of string keys, or an error naming
the folder and the field.  Sections whose content is another component's record (the evaluation
of a task, an objective's description, a module's stability record) stay mappings: their shape
belongs to that component.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from .core.errors import FairGPTQError

RESULTS = "results.json"


class RunRecordError(FairGPTQError):
    """A results.json that is missing, not JSON, or not a run record of this version."""


class _Section(BaseModel):
    # readers may rely on the named fields; a section may carry more (e.g. a backend's own description)
    model_config = ConfigDict(extra="allow")


class ModelSection(_Section):
    name: str
    model_type: str | None = None
    n_layers: int | None = None
    dtype: str | None = None
    parameters: int | None = None
    onload: dict[str, Any] | None = None


class QuantizationSection(_Section):
    config: dict[str, Any]
    seconds: float
    summary: dict[str, Any]
    modules: list[dict[str, Any]]


class ExportSection(_Section):
    path: str
    checkpoint_format: str
    size_mb: float
    reload_check: str | None = None
    identical_logits: bool | None = None
    max_abs_logit_diff: float | None = None


class RunRecord(BaseModel):
    """``results.json`` of one run (a single run, or one point or seed of a sweep)."""

    model_config = ConfigDict(extra="forbid")

    fairgptq_version: str
    pipeline: str
    point: dict[str, Any] | None
    config: dict[str, Any]
    model: ModelSection
    pair_sets: dict[str, dict[str, Any]]
    objectives: list[dict[str, Any]]
    backend: dict[str, Any]
    quantization: QuantizationSection
    metrics: dict[str, float | None]
    evaluation: dict[str, Any] | None = None
    pair_gap: dict[str, Any] | None = None
    plain: bool | None = None
    baseline: dict[str, Any] | None = None
    export: ExportSection | None = None
    plain_baseline: dict[str, Any] | None = None
    vs_plain: list[dict[str, Any]] | None = None
    vs_float: list[dict[str, Any]] | None = None
    timings: dict[str, float]
    versions: dict[str, Any]
    seeds: dict[str, int | None]
    plots: list[str]
    reused_from: dict[str, Any] | None = None  # set on a sweep point copied from another sweep (fairgptq.pipeline.reuse)


def check_run_record(data: dict, where: str = "results.json") -> RunRecord:
    """``data`` as a RunRecord, or an error naming ``where`` and every field that does not fit."""
    try:
        return RunRecord.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                             for err in e.errors()[:8])
        raise RunRecordError(f"{where} is not a run record of this fairgptq version ({problems}); a record from an "
                             f"older version is rerun by running its pipeline again") from None


def read_run_record(folder: Path) -> RunRecord:
    """The run record in ``folder`` (a run directory or a sweep point)."""
    path = Path(folder) / RESULTS
    return check_run_record(_read(path), str(path))


def read_run_section(folder: Path, name: str) -> Any:
    """One field of the run record in ``folder``, checked against its type in :class:`RunRecord`.

    For readers that need one section (``compare --groups`` reads ``metrics``): they accept a
    record from another version as long as that section has this version's shape."""
    path = Path(folder) / RESULTS
    field = RunRecord.model_fields[name]
    data = _read(path)
    if name not in data and field.is_required():
        raise RunRecordError(f"{path}: the run record has no {name!r}; a record from an older version is rerun by "
                             f"running its pipeline again")
    try:  # strict: a metric written as the string '12.5' or as true is a broken record, not a number
        return TypeAdapter(field.annotation).validate_python(data.get(name, field.default), strict=True)
    except ValidationError as e:
        where = ".".join(str(k) for k in (name, *e.errors()[0]["loc"]))
        raise RunRecordError(f"{path}: {where} does not have the shape of this fairgptq version "
                             f"({e.errors()[0]['msg']}, got {e.errors()[0]['input']!r})") from None


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunRecordError(f"{path}: no run record (the run is unfinished, or this is not a run directory)") from None
    except (OSError, ValueError) as e:
        raise RunRecordError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise RunRecordError(f"{path}: not a run record (a JSON {type(data).__name__}, not an object)")
    return data
