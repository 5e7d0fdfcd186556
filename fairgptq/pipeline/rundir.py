"""Run directories that are either complete or visibly not, and replaced only when that is safe.

The guarantees (docs/pipelines.md states them for users):

- A run is written into ``.<name>.partial-<pid>`` beside its final place, under the
  directory's lock (:mod:`.locking`), and moved into place only when everything succeeded,
  so an interrupted run never leaves a directory that looks finished.
- ``--force`` replaces only a directory fairgptq wrote (it carries :data:`MARKER`), never the
  working directory, a folder holding the pipeline file, or any of their parents.
- Replacement is atomic: the new run completes beside the old one and the two are swapped
  (``renameat2(RENAME_EXCHANGE)`` on Linux, else two renames with SIGINT/SIGTERM blocked);
  the old run is deleted only afterwards, and so that no moment of the deletion looks complete:
  its ``.complete`` goes first, then it is renamed to ``.<name>.trash-<pid>`` (never restored)
  and removed there.  Whatever moment an interrupt (even SIGKILL) hits, the next attempt finds
  the old complete run or the new one (:func:`_recover`), and restores a leftover only when its
  exported model still verifies.
- Stale partials are cleaned only while holding the directory's lock, so never one that a
  live run is writing; a partial that holds an exported model is kept (renamed to a visible
  ``<name>.unevaluated``) instead of deleted: quantization may have taken hours.

A sweep directory is created in place (its points are atomic run directories) and gets its
``.complete`` only after the last point and the summary; re-running an unfinished sweep
resumes it, and ``--force`` replaces its points one by one.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import yaml

from ..core.errors import FairGPTQError
from ..outputs import check_name, make_folder, write_file
from .locking import run_lock

COMPLETE = ".complete"
MARKER = ".fairgptq-run"
SWEEP_CONFIG = "sweep.yaml"
SWEEP_INPUTS = "inputs.json"
EXPORTED_MODEL = Path("model") / "quantize_config.json"
logger = logging.getLogger("fairgptq.pipeline")


class RunDirError(FairGPTQError):
    """The output directory exists (without --force), holds a different run, or may not be replaced."""


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def read_sweep_summary(sweep: Path) -> dict:
    """The ``results.json`` of a finished sweep, or an error that says why there is none.

    A sweep writes its summary only when its last point completes, so a folder without it is
    either not a sweep or one whose shards still have points to run; research scripts read the
    summary and should tell those apart instead of failing on a missing file.
    """
    summary = sweep / "results.json"
    if summary.is_file():
        return json.loads(summary.read_text(encoding="utf-8"))
    if not sweep.is_dir():
        raise RunDirError(f"{sweep} does not exist; give the --out folder of a finished sweep run")
    if not (sweep / SWEEP_CONFIG).is_file():
        raise RunDirError(f"{sweep} is not a sweep folder (no {SWEEP_CONFIG}); give the --out of a finished sweep run")
    done = sum(1 for c in (sweep / "points").rglob(COMPLETE)) if (sweep / "points").is_dir() else 0
    raise RunDirError(f"{sweep} is an unfinished sweep ({done} point(s) complete, no results.json yet): "
                      f"rerun the same `fairgptq run ... --out {sweep}` command (every shard) to finish it")


def mark_complete(path: Path) -> None:
    write_atomic(Path(path) / COMPLETE, time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def mark_fairgptq(path: Path) -> None:
    """Label a folder as fairgptq's own: only such a folder may be replaced by ``--force``."""
    write_atomic(Path(path) / MARKER, "written by fairgptq; --force may replace this folder\n")


def is_fairgptq_dir(path: Path) -> bool:
    """fairgptq's marker, or (folders written before it existed) a sweep config or a complete run's config."""
    p = Path(path)
    return ((p / MARKER).is_file() or (p / SWEEP_CONFIG).is_file()
            or (is_complete(p) and (p / "config.yaml").is_file()))


# every file of a run is written whole and gets the umask's mode, as the exported weights do
write_atomic = write_file


def check_target(final: Path, *, force: bool, protect: Iterable[Path] = ()) -> None:
    """Refuse an output directory that must not be (re)written; see the module docstring."""
    final = Path(final)
    resolved = final.resolve()
    for keep in [Path.cwd(), *protect]:
        keep = Path(keep).resolve()
        if resolved == keep or resolved in keep.parents:
            what = "the working directory" if keep == Path.cwd().resolve() else f"{keep} (it holds the pipeline)"
            raise RunDirError(f"--out {final} is or contains {what}; a run directory is replaced as a whole, so "
                              f"give it a folder of its own, e.g. --out runs/NAME")
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise RunDirError(f"--out {final} exists and is not a folder; choose another --out")
    if not final.exists() or not any(final.iterdir()):
        return
    if not is_fairgptq_dir(final):
        raise RunDirError(f"{final} exists and was not written by fairgptq (no {MARKER} marker); fairgptq never "
                          f"deletes a folder it did not write, even with --force: choose another --out")
    if not force:
        state = "a complete run" if is_complete(final) else "an incomplete run"
        raise RunDirError(f"{final} already exists ({state}); pass --force to replace it, or --out DIR")


def prepare_parent(final: Path) -> None:
    """Create the folder a run directory goes into, or say clearly why it cannot be."""
    check_name(Path(final), "--out")
    make_folder(Path(final).parent, "--out", Path(final))


def _partials(final: Path) -> list[Path]:
    return [*final.parent.glob(f".{final.name}.partial-*"), *final.parent.glob(f".{final.name}.old-*"),
            *final.parent.glob(f".{final.name}.trash-*")]


def _discard(old: Path, final: Path) -> None:
    """Delete a replaced run so that no moment of it looks complete: .complete first, then a trash name, then the rest."""
    (old / COMPLETE).unlink(missing_ok=True)
    trash = final.parent / f".{final.name}.trash-{os.getpid()}"
    os.rename(old, trash)
    _delete_trash(trash)


def _delete_trash(trash: Path) -> None:
    """The last step of :func:`_discard`, on its own so that a test can stop a run exactly here and kill it."""
    shutil.rmtree(trash)


def _restorable(candidate: Path) -> bool:
    """A leftover complete run is put back only if its exported model (when it had one) is there and verifies."""
    try:
        results = json.loads((candidate / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # no run record to judge by (a sweep folder, a bare run): as complete as its marker says
    if not isinstance(results, dict) or not results.get("export"):
        return True
    from ..export import is_gptq_checkpoint, read_quantize_config
    from ..export.integrity import verify_files
    model = candidate / "model"
    if not is_gptq_checkpoint(model):
        return False
    try:
        verify_files(model, read_quantize_config(model))
    except FairGPTQError:
        return False
    return True


def _unique(path: Path) -> Path:
    candidate, i = path, 2
    while candidate.exists():
        candidate, i = path.with_name(f"{path.name}-{i}"), i + 1
    return candidate


def _salvage(partial: Path, final: Path) -> Path | None:
    """Move a partial holding an exported model to a visible ``<name>.unevaluated`` folder; None if none."""
    if is_complete(partial) or not (partial / EXPORTED_MODEL).is_file():
        return None
    dest = _unique(final.parent / f"{final.name}.unevaluated")
    os.rename(partial, dest)
    logger.warning("kept the exported model of an unfinished run in %s", dest)
    return dest


SALVAGED = re.compile(r".+\.unevaluated(-\d+)?")


def salvaged_copies(folder: Path) -> list[Path]:
    """Every salvaged ``<name>.unevaluated[-N]`` run under ``folder`` (sweep points included), oldest first.

    Only what :func:`_salvage` makes: a folder fairgptq wrote, not complete, holding an exported
    model; a complete run, or a user's folder that happens to share the name, is never listed.
    """
    return sorted((p for p in Path(folder).rglob("*.unevaluated*") if _is_salvaged(p)), key=lambda p: p.stat().st_mtime)


def _is_salvaged(path: Path) -> bool:
    return (path.is_dir() and not path.is_symlink() and SALVAGED.fullmatch(path.name) is not None
            and (path / MARKER).is_file() and not is_complete(path) and (path / EXPORTED_MODEL).is_file())


def remove_salvaged(copy: Path) -> None:
    """Delete one salvaged copy, under the lock of the run it was salvaged from (no run of that name is
    salvaging or restoring meanwhile), checked again there."""
    with run_lock(copy.parent / copy.name.split(".unevaluated", 1)[0]):
        if _is_salvaged(copy):
            shutil.rmtree(copy)


def _recover(final: Path) -> None:
    """Finish a swap an interrupt cut short: put the newest complete run back at ``final``."""
    if final.exists():
        return
    leftovers = sorted(_partials(final), key=lambda p: p.stat().st_mtime, reverse=True)
    new = [p for p in leftovers if p.name.startswith(f".{final.name}.partial-") and is_complete(p)]
    old = [p for p in leftovers if p.name.startswith(f".{final.name}.old-")]
    for candidate in new + old:
        if not _restorable(candidate):
            logger.warning("not restoring %s: its exported model is missing or does not verify", candidate.name)
            continue
        os.rename(candidate, final)
        logger.warning("restored %s from %s (an interrupted replacement)", final, candidate.name)
        return


def _remove_stale_partials(final: Path) -> list[Path]:
    """Called under ``final``'s lock, so no live run owns these; returns the salvaged folders."""
    kept = []
    for stale in _partials(final):
        # a trash folder is a replaced run mid-deletion (the user asked for its replacement): never salvaged
        dest = None if stale.name.startswith(f".{final.name}.trash-") else _salvage(stale, final)
        if dest is not None:
            kept.append(dest)
        else:
            shutil.rmtree(stale, ignore_errors=True)
    return kept


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def _signals_blocked() -> Iterator[None]:
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Make the complete ``tmp`` the run at ``final``; an old run there is deleted only afterwards."""
    if final.exists() and any(final.iterdir()):
        if _exchange(tmp, final):
            _discard(tmp, final)  # now the old run
            return
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        with _signals_blocked():
            os.rename(final, old)
            os.rename(tmp, final)
        _discard(old, final)
    else:
        if final.exists():
            final.rmdir()  # empty
        os.rename(tmp, final)


def _salvage_note(dest: Path) -> str:
    tasks = ""
    try:
        config = yaml.safe_load((dest / "config.yaml").read_text(encoding="utf-8"))
        tasks = ",".join(config["evaluation"]["tasks"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        pass
    # `fairgptq eval RUN_DIR` re-reads the pipeline's evaluation settings from its config.yaml, so the
    # finished evaluation scores the same items as the sweep's other runs, into RUN_DIR/items/
    finish = f"; finish the evaluation with: fairgptq eval {dest}" if tasks else ""
    return f"the quantized model was exported before the failure and is kept in {dest / 'model'}{finish}"


class FinishedMeanwhile(FairGPTQError):
    """A sweep point another process completed after this one last looked: take it, do not run it again."""


@contextmanager
def atomic_run_dir(final: str | Path, *, force: bool = False, protect: Iterable[Path] = (),
                   keep_complete: bool = False) -> Iterator[Path]:
    """Yield a temp folder; on success mark it complete and swap it into ``final``.

    On failure a partial holding an exported model is kept as ``<final>.unevaluated`` (the
    exception gets a note saying so and how to finish); any other partial stays, with its
    log, until the next attempt at the same run removes it.

    ``keep_complete`` (sweep points): a run found complete once the lock is held was finished by
    another shard since this process checked, so :class:`FinishedMeanwhile` is raised instead of
    computing it again (a ``--force`` sweep drops its points' markers before it starts, so a
    complete point here is always this sweep's own).
    """
    final = Path(final)
    protect = list(protect)
    prepare_parent(final)
    with run_lock(final):
        _recover(final)
        if keep_complete and is_complete(final):
            raise FinishedMeanwhile(f"{final} was completed by another process meanwhile")
        _remove_stale_partials(final)
        check_target(final, force=force, protect=protect)
        tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
        tmp.mkdir()
        mark_fairgptq(tmp)
        try:
            yield tmp
        except BaseException as e:
            dest = _salvage(tmp, final)
            if dest is not None:
                e.add_note(_salvage_note(dest))
            raise
        mark_complete(tmp)
        _swap_into_place(tmp, final)


def prepare_sweep_dir(path: str | Path, config_text: str, *, force: bool = False,
                      protect: Iterable[Path] = ()) -> bool:
    """Create or reopen a sweep folder; True when an interrupted sweep of the same config is resumed.

    With ``force`` an existing sweep is not deleted: its ``.complete`` and its points'
    ``.complete`` markers go (the points are then redone, each replaced atomically when its
    new run succeeds) and the new config is saved.
    """
    path = Path(path)
    saved = path / SWEEP_CONFIG
    check_target(path, force=True, protect=protect)  # not someone else's folder, not the cwd
    if path.exists() and any(path.iterdir()):
        same = saved.is_file() and saved.read_text(encoding="utf-8") == config_text
        if force:
            for point in [path, *(path / "points").glob("*")]:
                if point.is_dir() and is_fairgptq_dir(point):
                    mark_fairgptq(point)
                    (point / COMPLETE).unlink(missing_ok=True)
            write_atomic(saved, config_text)
            return False
        if is_complete(path):
            raise RunDirError(f"{path} holds a complete sweep; pass --force to redo it, or --out DIR")
        if not same:
            raise RunDirError(f"{path} holds a different sweep; pass --force to replace it, or --out DIR")
        return True
    path.mkdir(parents=True, exist_ok=True)
    mark_fairgptq(path)
    write_atomic(saved, config_text)
    return False


def _check_inputs(path: Path, inputs: dict[str, str], *, resumed: bool, force: bool) -> None:
    """A resumed sweep must read the same input files as its finished points did."""
    saved = path / SWEEP_INPUTS
    if resumed and saved.is_file() and not force:
        before = json.loads(saved.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(inputs) if before.get(k) != inputs.get(k))
        if changed:
            raise RunDirError(f"{path}: input file(s) changed since this sweep started: {', '.join(changed)}; its "
                              f"finished points used the old contents. Pass --force to redo every point, restore "
                              f"the files, or use another --out")
    write_atomic(saved, json.dumps(inputs, indent=2, sort_keys=True) + "\n")


@contextmanager
def sweep_dir(path: str | Path, config_text: str, inputs: dict[str, str], *, force: bool = False,
              shared: bool = False, protect: Iterable[Path] = ()) -> Iterator[bool]:
    """Hold a sweep folder's lock (shared between shards) while it runs; yields whether it resumes."""
    path = Path(path)
    prepare_parent(path)
    with run_lock(path, shared=shared):
        resumed = prepare_sweep_dir(path, config_text, force=force, protect=protect)
        _check_inputs(path, inputs, resumed=resumed, force=force)
        yield resumed


def remove_other_points(points: Path, keep: Iterable[str]) -> None:
    """After a sweep replaced with ``--force`` finished: drop the old sweep's points it no longer has.

    Points may be nested one level (``<point>/seed=<s>`` with repeats); only folders fairgptq
    wrote are removed, and a point folder only once none of its units is left.
    """
    keep = set(keep)
    for folder in points.glob("*"):
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in keep:
            continue
        if is_fairgptq_dir(folder):
            shutil.rmtree(folder)
            continue
        for unit in folder.glob("*"):
            if (unit.is_dir() and not unit.name.startswith(".") and f"{folder.name}/{unit.name}" not in keep
                    and is_fairgptq_dir(unit)):
                shutil.rmtree(unit)
        if not any(folder.iterdir()):
            folder.rmdir()
