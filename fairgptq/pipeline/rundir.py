"""Run directories that are either complete or visibly not: temp dir + rename, a ``.complete`` marker.

A single run is written into ``.<name>.partial-<pid>`` beside its final place and renamed
when everything succeeded, so an interrupted run never leaves a directory that looks
finished.  A sweep directory is created in place (its points are atomic run directories)
and gets its marker only after the last point and the summary are written; re-running an
unfinished sweep resumes it.  An existing complete directory is replaced only with ``force``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core.errors import FairGPTQError

COMPLETE = ".complete"
SWEEP_CONFIG = "sweep.yaml"


class RunDirError(FairGPTQError):
    """The output directory exists (without --force) or holds a different run."""


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def mark_complete(path: Path) -> None:
    write_atomic(Path(path) / COMPLETE, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file through a temp file in the same folder and ``os.replace`` (no torn files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; run outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_stale_partials(final: Path) -> None:
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_run_dir(final: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder; on success mark it complete and move it to ``final``.

    On failure the partial folder stays (with its log) for inspection and is removed by the
    next attempt at the same run.
    """
    final = Path(final)
    if final.exists() and not force:
        state = "a complete run" if is_complete(final) else "an incomplete run"
        raise RunDirError(f"{final} already exists ({state}); pass --force to replace it, or --out DIR")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(final)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    tmp.mkdir()
    yield tmp
    mark_complete(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def prepare_sweep_dir(path: str | Path, config_text: str, *, force: bool = False) -> bool:
    """Create or reopen a sweep folder; True when an interrupted sweep of the same config is resumed."""
    path = Path(path)
    saved = path / SWEEP_CONFIG
    if path.exists():
        same = saved.is_file() and saved.read_text(encoding="utf-8") == config_text
        if force:
            shutil.rmtree(path)
        elif is_complete(path):
            raise RunDirError(f"{path} holds a complete sweep; pass --force to redo it, or --out DIR")
        elif not same:
            what = "a different sweep" if saved.is_file() else "something that is not a fairgptq sweep"
            raise RunDirError(f"{path} holds {what}; pass --force to replace it, or --out DIR")
        else:
            return True
    path.mkdir(parents=True)
    write_atomic(saved, config_text)
    return False
