"""One writer per run directory: an OS file lock beside it, held for the whole run.

Two ``fairgptq run`` processes aimed at the same ``--out`` used to both run, the second
deleting the first's in-progress folder and then replacing its finished one.  Now each run
holds ``fcntl.flock`` on ``.<name>.lock`` (beside ``<name>``) from before it touches anything
until its directory is in place; a second run finds the lock held and stops at once with
exit 2, naming the holder's pid, host, start time and command line (written into the lock
file).  The kernel drops the lock when the holder dies, even by SIGKILL, so a stale lock
file never blocks anyone: only a live process does.

Shards of one sweep share the sweep folder: they take the sweep's lock in shared mode (any
number of shards, but no plain run at the same time) and an exclusive lock per point.
The lock file itself is never deleted (deleting a lock file another process is about to
open is the classic race); it is a few bytes.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from ..core.errors import FairGPTQError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not protected against each other
    fcntl = None  # type: ignore[assignment]


class RunLockedError(FairGPTQError):
    """Another live fairgptq process is writing this run directory."""


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _holder(f: IO[str]) -> str:
    f.seek(0)
    try:
        info = json.loads(f.read() or "{}")
    except json.JSONDecodeError:
        info = {}
    if not info:
        return "another fairgptq process (shards of a sweep hold it shared)"
    return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: "
            f"{info.get('command', '?')}")


def _try_lock(f: IO[str], shared: bool) -> bool:
    try:
        fcntl.flock(f.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def run_lock(target: str | Path, *, shared: bool = False, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock of run directory ``target`` inside the block.

    ``wait`` seconds are spent retrying before giving up with :class:`RunLockedError`.
    """
    if fcntl is None:
        yield
        return
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+", encoding="utf-8")
    except OSError as e:
        raise RunLockedError(f"cannot create the lock file {path} beside {target} ({e.strerror or e}); choose "
                             f"another --out, in a folder you can write") from None
    with f:
        deadline = time.monotonic() + wait
        while not _try_lock(f, shared):
            if time.monotonic() >= deadline:
                raise RunLockedError(f"{target} is being written by another fairgptq run ({_holder(f)}); wait "
                                     f"for it to finish, or choose another --out")
            time.sleep(0.2)
        if not shared:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "command": " ".join(sys.argv)[:500]}))
            f.flush()
        try:
            yield
        finally:
            if not shared:
                f.seek(0)
                f.truncate()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
