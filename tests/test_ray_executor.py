"""Sweeps under the Ray executor (a local Ray, 2 CPUs): same results and layout as local; failures isolated."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fairgptq.cli import main
from fairgptq.pipeline import load_pipeline
from fairgptq.pipeline.executors import SweepIncomplete
from fairgptq.pipeline.rundir import is_complete
from fairgptq.pipeline.runner import run_pipeline

from tiny_model import WORDS, save_tiny_llama, tiny_pipeline, write_pair_file, write_yaml

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'fairgptq[ray]')")

# a backend that kills its own worker process once: the first task to claim the marker file dies
# (only inside a Ray task: the driver builds the backend too, to check its parameters before the run)
KILLER_PLUGIN = '''
import os, signal
import ray
from fairgptq.backends.cpu import CpuBackend
from fairgptq.contract.hooks import hookimpl

class KillOnceBackend(CpuBackend):
    name = "kill_once"

    def __init__(self, marker: str, **kw):
        super().__init__(**kw)
        if not (ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None):
            return
        try:
            os.remove(marker)
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)

@hookimpl
def fairgptq_backends():
    return {"kill_once": KillOnceBackend}
'''


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray for the module; workers import the test's plugin module through PYTHONPATH."""
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "kill_once_backend.py").write_text(KILLER_PLUGIN)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(plugins), *([old] if old else [])])
    sys.path.insert(0, str(plugins))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield plugins
    ray.shutdown()
    sys.path.remove(str(plugins))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def sweep_file(d: Path, *, evaluation: bool, backend: dict) -> Path:
    text = d / "text.txt"
    text.write_text("\n".join(" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(40)) for i in range(12)))
    raw = tiny_pipeline(save_tiny_llama(d / "model"), write_pair_file(d / "pairs.jsonl"),
                        export={"enabled": False}, backend=backend,
                        sweep={"grid": {"objectives[0].params.alpha": [0.0, 0.1, 0.2, 0.4]}},
                        executor={"name": "local", "num_cpus": 1, "num_gpus": 0})
    if evaluation:
        raw["evaluation"] = {"tasks": ["wikitext2"], "paths": {"wikitext2": str(text)}, "seqlen": 32}
    return write_yaml(d / "sweep.yaml", raw)


def layout(folder: Path) -> set[str]:
    """Every file of a run directory but logs (their lines carry times)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".log")}


@pytest.mark.slow
def test_ray_sweep_equals_local(local_ray, tmp_path):
    # one thread: Ray sets a task's thread count to its CPUs, and the rounding must not depend on it
    f = sweep_file(tmp_path, evaluation=True, backend={"name": "cpu", "params": {"threads": 1}})
    local = run_pipeline(load_pipeline(f), tmp_path / "local")
    assert main(["run", str(f), "--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    remote = tmp_path / "ray"
    assert is_complete(remote) and layout(remote) == layout(local)
    a, b = (json.loads((d / "results.json").read_text()) for d in (local, remote))
    assert [p["metrics"] for p in a["points"]] == [p["metrics"] for p in b["points"]]
    assert all(p["metrics"] for p in a["points"])
    for point in a["points"]:
        ra, rb = (json.loads((d / "points" / point["name"] / "results.json").read_text()) for d in (local, remote))
        assert ra["quantization"]["modules"] == rb["quantization"]["modules"]
        assert rb["config"]["executor"]["name"] == "ray"


@pytest.mark.slow
def test_killed_task_leaves_the_others_and_resume_runs_only_it(local_ray, tmp_path):
    marker = tmp_path / "kill-once"
    marker.touch()
    f = sweep_file(tmp_path, evaluation=False, backend={"name": "kill_once", "params": {"marker": str(marker)}})
    overrides = ["plugins=[kill_once_backend]", "executor.name=ray"]
    with pytest.raises(SweepIncomplete, match="1 of 4 sweep point"):
        run_pipeline(load_pipeline(f, overrides), tmp_path / "out")
    points = sorted((tmp_path / "out" / "points").iterdir())
    done = {p.name: (p / "results.json").stat().st_mtime_ns for p in points if is_complete(p)}
    assert len(done) == 3 and not marker.exists()

    def untouched(target):
        return {n: (target / "points" / n / "results.json").stat().st_mtime_ns for n in done} == done

    marker.touch()  # the resumed point dies too: the command line reports it with exit code 1
    assert main(["run", str(f), "--set", overrides[0], "--executor", "ray", "--out", str(tmp_path / "out")]) == 1
    assert untouched(tmp_path / "out") and not marker.exists()
    target = run_pipeline(load_pipeline(f, overrides), tmp_path / "out")
    assert is_complete(target) and untouched(target)
    assert len([p for p in (target / "points").iterdir() if is_complete(p)]) == 4


def test_executor_needs_a_sweep(tmp_path):
    from fairgptq.core.errors import ConfigError

    raw = tiny_pipeline(save_tiny_llama(tmp_path / "model"), write_pair_file(tmp_path / "pairs.jsonl"),
                        executor={"name": "ray"})
    with pytest.raises(ConfigError, match="executor ray runs the points of a sweep"):
        run_pipeline(load_pipeline(write_yaml(tmp_path / "one.yaml", raw)), tmp_path / "out")
