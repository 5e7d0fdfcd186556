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


PARITY = Path(__file__).resolve().parents[1] / "pipelines" / "research" / "recipe_parity.yaml"


def test_the_parity_pipeline_pairs_every_point_with_plain_gptq_on_the_same_h_seed_and_split(real_data_dir):
    """Issue 33 item 5 (validated, not run): 5 seeds; targets 1 .. 3 and auto, one source and several combined,
    both StereoSet splits; act-order + static groups everywhere; each point's reference is the plain point of
    its seed and split (what the sweep's statistics pair it with)."""
    from fairgptq.pipeline.objective_settings import config_is_plain
    from fairgptq.analysis.seeds import reference_of
    pipeline = load_pipeline(PARITY)
    assert len(pipeline.points) == 26 * 5
    units = []
    for point in pipeline.points:
        spec = validate(point.raw, str(PARITY), environment=False)
        assert spec.quantization.act_order and spec.quantization.static_groups, point.name
        units.append({"name": point.name, "seed": point.seed, "values": point.values,
                      "plain": config_is_plain(point.raw), "spec": spec})
    assert sorted({u["seed"] for u in units}) == [0, 1, 2, 3, 4]
    targets = {str(u["spec"].objectives[0].params["target"]) for u in units if not u["plain"]}
    assert targets == {"1.0", "1.5", "2.0", "2.5", "3.0", "auto"}
    assert {len(u["spec"].objectives[0].pair_set_names()) for u in units} == {1, 5}
    assert {u["spec"].evaluation.options()["stereoset_split_by"] for u in units} == {"item", "target"}
    for u in units:
        if u["plain"]:
            continue
        ref = reference_of(u, units)
        assert ref is not None and ref["seed"] == u["seed"], u["name"]
        split = u["spec"].evaluation.options()["stereoset_split_by"]
        assert ref["spec"].evaluation.options()["stereoset_split_by"] == split
        assert ref["spec"].calibration.text == u["spec"].calibration.text  # the same H


def test_the_parity_pipeline_never_scores_a_stereoset_item_or_held_out_term_it_calibrates_on(real_data_dir):
    from fairgptq.datasets_adapters.splits import target_key
    pipeline = load_pipeline(PARITY)
    registry = Registry(entry_points=False)
    stereoset = load_stereoset()
    for point in (p for p in pipeline.points if p.seed == 0):
        spec = validate(point.raw, str(PARITY), environment=False)
        by = spec.evaluation.options()["stereoset_split_by"]
        scored = split_items(stereoset, "holdout", spec.evaluation.holdout_fraction, by)
        sets = build.pair_sets(spec, registry)
        calibration = build.objective_pairs(spec.objectives[0], sets)
        assert find_overlap(scored, calibration) == [], point.name
        if by == "target":
            held_terms = {target_key(p) for p in scored}
            stereoset_pairs = [p for p in calibration if p.source_id.startswith("stereoset")]
            assert stereoset_pairs and not {target_key(p) for p in stereoset_pairs} & held_terms, point.name
