"""Points one sweep can take from another: the same resolved run on the same inputs.

Research questions share runs.  Plain GPTQ on the same pairs and seeds is the reference of every
question that keeps H fixed, and one question's grid often holds another's point (α 0.1 on all
layers is a point of the α grid and of the placement grid).  On 2 cores one point costs minutes,
so ``fairgptq run ... --reuse OTHER_SWEEP`` copies a finished point of another sweep instead of
recomputing it, and the float model's evaluation with it.

A point is taken only when it would be the same computation:

- its saved ``config.yaml`` equals this point's resolved config in every setting except the
  pipeline's ``name``, ``description`` and ``output``, which label a run and compute nothing;
- the other sweep read the same input files (its ``inputs.json`` fingerprints equal this sweep's
  for every file both read); otherwise ``--reuse`` is refused, naming the files;
- the other sweep ran the same fairgptq, torch and transformers versions (recorded per point).

What this trusts: that one resolved config on one machine computes one result.  Quantization runs
on the configured backend threads and evaluation is batched deterministically; two sweeps on this
project's machine have reproduced each other's shared points digit for digit (docs/research.md,
pair source).  A copied point keeps its files and says where it came from (``reused_from`` in its
``results.json``, a line in its ``run.log``), so the summary can be traced to the run that computed it.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from ..core.errors import ConfigError
from ..run_record import RESULTS, RunRecord, RunRecordError, read_run_record
from .rundir import COMPLETE, SWEEP_CONFIG, SWEEP_INPUTS, is_complete, write_atomic

logger = logging.getLogger("fairgptq.pipeline")

LABELS = ("name", "description", "output")  # settings that name a run and compute nothing
VERSION_KEYS = ("fairgptq", "torch", "transformers")


def _key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in LABELS}, sort_keys=True, default=str)


def _with_current_defaults(saved: dict) -> dict:
    """A point's saved resolved config as this version resolves it: a setting added since (an objective's new
    parameter) takes its default, which is how the point was computed, so the point still matches. A config
    this version no longer accepts is compared as saved (it then matches nothing)."""
    from .loading import validate
    try:
        return validate(saved, "a reused point's config.yaml", environment=False).model_dump(mode="json")
    except ConfigError:  # a PipelineError too
        return saved


def _versions(record: RunRecord) -> dict:
    return {k: record.versions.get(k) for k in VERSION_KEYS}


def _checkpoint_problem(point: Path, record: RunRecord) -> str | None:
    """Why a finished point's exported model cannot be copied (None when it exported none, or it verifies)."""
    if record.export is None:
        return None
    from ..core.errors import FairGPTQError
    from ..export import is_gptq_checkpoint, read_quantize_config
    from ..export.integrity import verify_files
    model = point / record.export.path
    if not is_gptq_checkpoint(model):
        return f"its exported model ({model}) is missing or incomplete"
    qc = read_quantize_config(model)
    if not (qc.get("meta", {}).get("fairgptq") or {}).get("integrity"):
        return "its exported model has no integrity record to check the copy against"
    try:
        verify_files(model, qc)
    except FairGPTQError as e:
        return f"its exported model does not verify ({e})"
    return None


class ReusablePoints:
    """Complete points of other sweeps, found by their resolved config."""

    def __init__(self, sweeps: list[str | Path], inputs: dict[str, str], versions: dict[str, str]) -> None:
        self.sweeps = [Path(s) for s in sweeps]
        self._versions = {k: versions.get(k) for k in VERSION_KEYS}
        self._keys: dict[Path, str] = {}  # a complete point's config never changes: each is validated once
        for sweep in self.sweeps:
            self._check_sweep(sweep, inputs)

    def _index(self) -> dict[str, Path]:
        """Complete points by config, read afresh: the other sweep may still be running and finish more."""
        points: dict[str, Path] = {}
        for sweep in self.sweeps:
            for config in sorted((sweep / "points").rglob("config.yaml")):
                if is_complete(config.parent) and (config.parent / RESULTS).is_file():
                    if config not in self._keys:
                        saved = yaml.safe_load(config.read_text(encoding="utf-8"))
                        self._keys[config] = _key(_with_current_defaults(saved))
                    points.setdefault(self._keys[config], config.parent)
        return points

    @staticmethod
    def _check_sweep(sweep: Path, inputs: dict[str, str]) -> None:
        if not (sweep / SWEEP_CONFIG).is_file():
            raise ConfigError(f"--reuse {sweep}: not a sweep folder (no {SWEEP_CONFIG}); give the --out of a sweep run")
        saved = sweep / SWEEP_INPUTS
        if not saved.is_file():
            raise ConfigError(f"--reuse {sweep}: it has no {SWEEP_INPUTS}, so its input files cannot be checked "
                              f"against this sweep's; rerun it with this version of fairgptq or drop --reuse")
        theirs = json.loads(saved.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(theirs) & set(inputs) if theirs[k] != inputs[k])
        if changed:
            raise ConfigError(f"--reuse {sweep}: it read other contents of {', '.join(changed)} than this sweep "
                              f"would, so its points are not this sweep's; drop --reuse or restore the files")

    def find(self, resolved: dict) -> Path | None:
        """The finished point computing exactly ``resolved`` on the same versions, if any sweep has one.

        A point whose run exported a model is taken only if that model is there and verifies against
        its integrity record; otherwise it is refused (logged and said on the console) and recomputed.
        """
        found = self._index().get(_key(resolved))
        if found is None:
            return None
        try:
            record = read_run_record(found)
        except RunRecordError as e:  # another version's record: compute the point again
            logger.info("not reusing %s: %s", found, e)
            return None
        if _versions(record) != self._versions:
            logger.info("not reusing %s: made with %s, this run has %s", found, _versions(record), self._versions)
            return None
        problem = _checkpoint_problem(found, record)
        if problem is not None:
            logger.warning("not reusing %s: %s; the point is computed again", found, problem)
            return None
        return found

    def copy(self, source: Path, tmp: Path) -> None:
        """Copy a found point into the run folder being made (``atomic_run_dir`` marks and places it)."""
        for item in source.iterdir():
            if item.name == COMPLETE:
                continue
            dest = tmp / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(item, dest)
        results = json.loads((tmp / RESULTS).read_text(encoding="utf-8"))
        # a copy of a copy keeps naming the run that computed it; the record is otherwise kept as it was
        results["reused_from"] = results.get("reused_from") or {"run": str(source.resolve()),
                                                                "pipeline": results.get("pipeline")}
        write_atomic(tmp / RESULTS, json.dumps(results, indent=2, default=str))
        with open(tmp / "run.log", "a", encoding="utf-8") as log:
            log.write(f"reused: this point is a copy of {source.resolve()} (same resolved config, inputs and "
                      f"versions); it was not recomputed\n")

    def baseline(self, resolved: dict, target: Path) -> dict | None:
        """The float model's evaluation from a sweep with the same model and ``evaluation`` sections.

        Copies its ``baseline.json`` and item records (``float/``) into ``target`` and returns the
        baseline; None when no reused sweep evaluated the float model the same way.
        """
        for sweep in self.sweeps:
            config = yaml.safe_load((sweep / SWEEP_CONFIG).read_text(encoding="utf-8"))
            same = all(config.get(k) == resolved.get(k) for k in ("model", "evaluation"))
            if same and (sweep / "baseline.json").is_file():
                if (sweep / "float").is_dir():
                    shutil.copytree(sweep / "float", target / "float", dirs_exist_ok=True)
                baseline = json.loads((sweep / "baseline.json").read_text(encoding="utf-8"))
                write_atomic(target / "baseline.json", json.dumps(baseline, indent=2, default=str))
                logger.info("float baseline reused from %s", sweep)
                return baseline
        return None
