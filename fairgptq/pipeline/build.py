"""Turning a validated spec into engine inputs: pair sets, calibration batches, objectives, backend, config."""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError
from ..core.objective import Objective, TokenBatch
from ..core.quantizer import QuantConfig
from ..contract.pairs import Pair
from ..datasets_adapters.sampling import pair_subset
from ..contract import pairs_hash
from ..contract.targets import DEFAULT_ROLES
from ..registry import Registry
from .arguments import PATH_KEYS, expand_path, objective_arguments, with_expanded_paths
from .objective_settings import targeted_roles
from .schema import ObjectiveSpec, PairSetSpec, PipelineSpec


logger = logging.getLogger("fairgptq.pipeline")


@dataclass
class PairSet:
    pairs: list[Pair]
    info: dict[str, Any]


def pair_sets(spec: PipelineSpec, registry: Registry) -> dict[str, PairSet]:
    """Load, split and sample every named pair set; ``info`` (size, hash, skipped rows) goes in the record."""
    sets = {}
    for name, ps in spec.calibration.pairs.items():
        sets[name] = load_pair_set(ps, registry)
        if ps.n is not None and ps.n > sets[name].info["n"]:
            logger.warning("calibration.pairs.%s.n: %d pairs asked for, the %s split of %s holds %d: all of them are "
                           "used (the record says so: n_requested)", name, ps.n, ps.split, ps.source,
                           sets[name].info["n"])
    return sets


#: pair sources already read in this process, by the plugin that provides the source (two pipelines' plugins
#: may both name one ``mine``), its settings and the state of the files they read: a sweep's points and its
#: validation share one pair file, so it is read (and its bad rows reported) once
_SOURCES: dict[str, Any] = {}


def _provider(factory: Any) -> str:
    """The providing plugin's factory, by module and name (what tells two same-named sources apart)."""
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', type(factory).__qualname__)}"


def _read_source(ps: PairSetSpec, registry: Registry):
    params = with_expanded_paths(ps.params)
    stamps = [(v, Path(v).stat().st_mtime_ns, Path(v).stat().st_size) for k, v in sorted(params.items())
              if k in PATH_KEYS and isinstance(v, str) and Path(v).is_file()]
    info = registry.get("pair_sources", ps.source)
    key = json.dumps([ps.source, _provider(info.factory), info.origin, params, stamps], sort_keys=True, default=str)
    if key not in _SOURCES:
        _SOURCES[key] = registry.create("pair_sources", ps.source, **params)
    return _SOURCES[key]


def load_pair_set(ps: PairSetSpec, registry: Registry) -> PairSet:
    """One pair set: the source plugin's pairs, the chosen split, then a deterministic sample."""
    loaded = _read_source(ps, registry)
    bad_rows = getattr(loaded, "bad_rows", ())
    total = len(loaded)
    pairs = list(pair_subset(loaded, ps.split, ps.holdout_fraction, ps.n, ps.seed, ps.stratify, ps.split_by))
    return PairSet(pairs, {
        "source": ps.source, "params": ps.params, "origin": getattr(loaded, "source", ""), "rows_read": total,
        "bad_rows": len(bad_rows), "bad_row_examples": [str(b) for b in bad_rows[:5]], "split": ps.split,
        "split_by": ps.split_by,
        "n": len(pairs), "n_requested": ps.n, "seed": ps.seed, "stratify": ps.stratify, "sha256_16": pairs_hash(pairs),
        "categories": dict(sorted(Counter(p.category for p in pairs).items()))})


def pair_gap(spec: PipelineSpec, registry: Registry, model, tokenizer, calibration_pairs: list[Pair],
             cache: dict | None = None):
    """The held-out pair-gap yardstick, built on the float model; refuses pairs that calibration used.

    Building it costs a float forward pass over every held-out pair; the points of a sweep share
    the float model and the yardstick, so ``cache`` (one per sweep process) keeps it by settings.
    """
    import json as _json
    from ..evaluation.pair_gap import PairGap
    from ..datasets_adapters.splits import find_overlap
    g = spec.evaluation.pair_gap
    held_out = load_pair_set(g.pairs, registry)
    overlap = find_overlap(held_out.pairs, calibration_pairs)
    if overlap:
        raise ConfigError(f"evaluation.pair_gap.pairs: {len(overlap)} of its {len(held_out.pairs)} pairs were used "
                          f"for calibration (e.g. {overlap[:3]}); draw them from a held-out split "
                          f"(split: holdout while calibration uses split: calibration)")
    roles = (g.roles or targeted_roles(registry, ((o.name, o.params) for o in spec.objectives))
             or list(DEFAULT_ROLES))
    key = _json.dumps([g.model_dump(mode="json"), roles, spec.model.model_dump(mode="json"),
                       spec.calibration.max_length, held_out.info["sha256_16"]], sort_keys=True)
    if cache is not None and key in cache:
        return cache[key]
    built = PairGap(model, tokenizer, held_out.pairs, roles, alignment=g.alignment,
                    batch_size=spec.calibration.batch_size, max_length=spec.calibration.max_length)
    if cache is not None:
        cache[key] = built
    return built


def text_calibration(spec: PipelineSpec, tokenizer) -> list[TokenBatch] | None:
    text = spec.calibration.text
    if text is None or text.n == 0:
        return None
    from ..datasets_adapters.wikitext import calibration_windows
    return calibration_windows(tokenizer, n=text.n, seqlen=text.seqlen, seed=text.seed, split=text.split,
                               batch_size=text.batch_size, path=expand_path(text.path) if text.path else None)


def objectives(spec: PipelineSpec, registry: Registry, sets: dict[str, PairSet]) -> list[Objective]:
    built = []
    for o in spec.objectives:
        factory = registry.get("objectives", o.name).factory
        pairs = objective_pairs(o, sets) if o.pairs else None
        # through the registry, which names a factory that returns something other than an Objective
        built.append(registry.create("objectives", o.name, **objective_arguments(o, factory, spec.calibration,
                                                                                 pairs=pairs)))
    return built


def objective_pairs(o: ObjectiveSpec, sets: dict[str, PairSet]) -> list[Pair]:
    """The pairs an objective reads: its set's, or its sets' concatenated in the order named (a combined
    calibration: StereoSet intra- and intersentence, RedditBias, HolisticBias, templates in one gradient)."""
    return [p for name in o.pair_set_names() for p in sets[name].pairs]


def backend(spec: PipelineSpec, registry: Registry):
    """The run's backend, built from ``backend:`` (the one place a pipeline builds one: its constructor checks
    its parameters and its hardware, so validate, the run and the plain baseline fail the same way)."""
    return registry.create("backends", spec.backend.name, **spec.backend.params)


@dataclass
class RunInputs:
    """What a run quantizes with, built the same way whichever path (in memory or onloaded) runs it."""
    sets: dict[str, PairSet]
    calibration: list[TokenBatch] | None
    objectives: list[Objective]
    backend: Any
    calibration_pairs: list[Pair]  # every pair an objective calibrates on: the evaluation refuses to score them

    @property
    def pair_info(self) -> dict[str, dict]:
        return {name: ps.info for name, ps in self.sets.items()}


def run_inputs(spec: PipelineSpec, registry: Registry, tokenizer) -> RunInputs:
    """Pair sets, calibration windows, objectives and backend of one run (logged with the pair sets' hashes)."""
    sets = pair_sets(spec, registry)
    for name, ps in sets.items():
        logger.info("pair set %s: %s", name, ps.info)
    return RunInputs(sets, text_calibration(spec, tokenizer), objectives(spec, registry, sets), backend(spec, registry),
                     [p for o in spec.objectives for p in objective_pairs(o, sets)])


def quant_config(spec: PipelineSpec) -> QuantConfig:
    """The engine's config from the validated quantization section, which has exactly its fields."""
    return QuantConfig(**spec.quantization.model_dump())


def evaluation_options(spec: PipelineSpec, calibration_pairs: list[Pair]) -> dict[str, Any]:
    """Keyword options for :func:`fairgptq.evaluation.evaluate`: the shared settings and every task option.

    The calibration pairs go along so that the bias tasks can refuse to score them.
    """
    e = spec.evaluation
    opts: dict[str, Any] = {"batch_size": e.batch_size, "limit": e.limit,
                            "paths": {k: str(expand_path(v)) for k, v in e.paths.items()}, **e.options()}
    if calibration_pairs:
        opts["calibration"] = calibration_pairs
    return opts


def storage_dtype(spec: PipelineSpec) -> torch.dtype | None:
    """The unquantized tensors' storage dtype when the run exports (the evaluated model is snapped to it)."""
    name = spec.export.storage_dtype(spec.model.dtype)
    return None if name is None else getattr(torch, name)
