"""Which files a pipeline reads, and a fingerprint of each (so a resumed sweep can tell they changed).

A sweep resumed after its pair file was edited used to mix points built from 8 pairs with
points built from 4 in one summary.  The sweep folder now keeps ``inputs.json`` (path ->
fingerprint of every data file and the model's folder) and a resume with different
fingerprints is refused unless ``--force``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from .arguments import PATH_KEYS, expand_path
from .schema import PipelineSpec

HASHED_BYTES = 256 * 2**20  # bigger files (model weights) are fingerprinted by size and mtime


def evaluation_files(spec: PipelineSpec) -> dict[str, Path | None]:
    """Task -> the data file its evaluation reads (None: the task has no default and needs evaluation.paths)."""
    from ..datasets_adapters.data_location import expected_path
    from ..evaluation.task_registry import registered_tasks

    known = registered_tasks()
    out: dict[str, Path | None] = {}
    for task in spec.evaluation.tasks:
        given = spec.evaluation.paths.get(task)
        if given:
            out[task] = expand_path(given)
            continue
        t = known.get(task)
        if t is None or not t.needs_data:
            continue  # an unknown task is the checks' to report; this one brings or finds its own data
        out[task] = expected_path(t.data_file) if t.data_file else None
    return out


def input_files(spec: PipelineSpec) -> list[Path]:
    """Every local file or folder the pipeline reads: pair files, text, evaluation data, the model."""
    from ..datasets_adapters.data_location import expected_path

    files = [expand_path(ps.params[k]) for ps in spec.calibration.pairs.values() for k in PATH_KEYS
             if isinstance(ps.params.get(k), str)]
    text = spec.calibration.text
    if text is not None and text.n > 0:
        files.append(expand_path(text.path) if text.path else expected_path(f"wikitext2/{text.split}.txt"))
    files += [p for p in evaluation_files(spec).values() if p is not None]
    model = expand_path(spec.model.name)
    if model.exists():
        files.append(model)
    return files


def _fingerprint(path: Path) -> str:
    if path.is_dir():
        return "dir:" + hashlib.sha256("\n".join(f"{p.relative_to(path)}={_fingerprint(p)}" for p in
                                                  sorted(path.rglob("*")) if p.is_file()).encode()).hexdigest()[:16]
    if not path.is_file():
        return "missing"
    stat = path.stat()
    if stat.st_size > HASHED_BYTES:
        return f"size:{stat.st_size},mtime:{int(stat.st_mtime)}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def sweep_inputs(specs: list[PipelineSpec]) -> dict[str, str]:
    """Fingerprint of every input of a sweep's specs: the pipeline's and every point's (points may sweep a path)."""
    return {str(p): _fingerprint(p) for spec in specs for p in input_files(spec)}
