"""The research pipelines (pipelines/research/) validate, and never evaluate what they calibrate on.

Validation is what ``fairgptq validate`` does (schema, plugins, files; no model).  The
overlap check builds every sweep point's calibration pair sets and the pairs each of its
bias tasks would score, and runs the evaluation's own overlap guard on them, so a
held-out split that leaks (a pair, a shared sentence, or a translation) fails here in
seconds instead of after an hour of quantization.  Needs the real data (skips without).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fairgptq.evaluation.pair_tasks import PAIR_TASKS, _check_overlap, load_task_pairs
from fairgptq.datasets_adapters.splits import find_overlap, split_items
from fairgptq.datasets_adapters import load_stereoset
from fairgptq.pipeline import build
from fairgptq.pipeline.loading import load_pipeline, validate
from fairgptq.registry import Registry

# the language and genre questions (issue 17); the recipe pipelines (recipe_*.yaml, StereoSet only) are
# validated with every shipped pipeline in test_pipeline_validation.py
RESEARCH = sorted(p for p in (Path(__file__).resolve().parents[1] / "pipelines" / "research").glob("*.yaml")
                  if not p.name.startswith("recipe_"))


def test_there_are_research_pipelines():
    assert {p.stem for p in RESEARCH} >= {"cross_lingual", "narrative", "pair_source"}


@pytest.mark.parametrize("path", RESEARCH, ids=lambda p: p.stem)
def test_research_pipeline_validates_and_never_scores_its_calibration_pairs(path, real_data_dir):
    pipeline = load_pipeline(path)
    assert len(pipeline.points) >= 9                      # every setting over three pair seeds
    registry = Registry(entry_points=False)
    evaluation = pipeline.spec.evaluation
    scored_tasks = [t for t in evaluation.tasks if t in PAIR_TASKS]
    assert scored_tasks and evaluation.pair_split == "holdout"
    scored = {t: split_items(load_task_pairs(t), "holdout", evaluation.holdout_fraction) for t in scored_tasks}
    if "stereoset" in evaluation.tasks:
        assert evaluation.stereoset_split == "holdout"
        scored["stereoset"] = split_items(load_stereoset(), "holdout", evaluation.holdout_fraction)
    seen_sets: dict[str, str] = {}
    for point in pipeline.points:
        spec = validate(point.raw, str(path), environment=False)
        sets = build.pair_sets(spec, registry)
        calibration = [p for o in spec.objectives if o.pairs for p in sets[o.pairs].pairs]
        assert calibration, point.name
        for task, pairs in scored.items():
            if task == "stereoset":
                assert find_overlap(pairs, calibration) == [], (point.name, task)
            else:
                assert _check_overlap(task, pairs, calibration, "error")["n_overlapping"] == 0, (point.name, task)
        seen_sets[point.name] = "|".join(sets[o.pairs].info["sha256_16"] for o in spec.objectives if o.pairs)
    # the seed sweep really draws different pair sets: at least one per seed
    assert len(set(seen_sets.values())) >= 3
