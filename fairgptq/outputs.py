"""Where a command's output files go, and when an existing one may be replaced: one policy for every command.

Every file a command writes outside a run directory (``report --plot``, ``compare --out``,
``audit --out``, ``eval --out``) goes through here, so the rules are the same everywhere:

- A path that already exists is never replaced unless the user passes ``--force``; a folder in
  the way of a file, or a name that cannot be written at all (a non-UTF-8 name, a place like
  ``/proc``), is refused before any work starts, with the reason.
- The path a message names is the path written: a plot asked for as ``runs/rp`` is written as
  ``runs/rp.png`` and reported as such.
- A file is written whole (temp file in the same folder, then renamed), so an interrupt never
  leaves half a report where the old one was.
- Its mode is what the umask gives a new file (0644 under 022, 0600 under 077), the same as the
  exported weights get, so one policy covers every file of a run (:func:`file_mode`).

Run directories have their own, stricter rule (:mod:`fairgptq.pipeline.rundir`): ``--force``
replaces only a folder fairgptq wrote, never a user's.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .core.errors import ConfigError


class OutputExists(ConfigError):
    """An output path exists and ``--force`` was not given."""


def file_mode() -> int:
    """The mode a new file gets under this process's umask; every output file is set to it.

    ``mkstemp`` creates 0600 and safetensors writes 0600 whatever the umask, so without one
    rule a run's weights and its reports ended up with different modes.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_name(path: Path, flag: str) -> None:
    """Refuse a name the file system or the UTF-8 records (JSON, Markdown) cannot take."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{flag} {os.fsdecode(os.fsencode(path))!a}: the name is not valid UTF-8, so the records "
                          f"that name it cannot be written; choose a plain name") from None


def output_file(path: str | Path, *, force: bool = False, suffix: str | None = None, flag: str = "--out") -> Path:
    """The file that will be written for ``path`` (``suffix`` added when missing), checked before any work.

    Creates the folder it goes into; refuses an existing file without ``force`` and anything that
    is not a plain file even with it.
    """
    path = Path(path)
    check_name(path, flag)
    if suffix and path.suffix.lower() != suffix.lower():
        path = path.with_name(path.name + suffix)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name (e.g. {path / ('out' + (suffix or ''))})")
    if path.exists() or path.is_symlink():
        if not path.is_file() or path.is_symlink():
            raise ConfigError(f"{flag} {path} exists and is not a plain file; choose another name")
        if not force:
            raise OutputExists(f"{path} exists; fairgptq does not replace an existing file: pass --force to replace "
                               f"it, or choose another name")
    make_folder(path.parent, flag, path)
    return path


def output_folder(folder: str | Path, names: Iterable[str], *, force: bool = False, flag: str = "--out") -> Path:
    """A folder that will receive ``names`` (files or subfolders): created if new; refused if it is a file, or
    if any of ``names`` is already in it and ``force`` was not given."""
    folder = Path(folder)
    check_name(folder, flag)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder} exists and is not a folder; give a folder for {', '.join(names)}")
    clash = [n for n in names if (folder / n).exists()]
    if clash and not force:
        raise OutputExists(f"{flag} {folder} already holds {', '.join(clash)}; fairgptq does not replace an existing "
                           f"result: pass --force to replace it, or give a new folder")
    make_folder(folder, flag, folder)
    return folder


def make_folder(folder: Path, flag: str, target: Path) -> None:
    """Create ``folder`` (for ``flag target``), or say clearly why it cannot be: one message for every command."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag} {target}: cannot create {folder} ({e.strerror or e}); choose another place") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {target}: cannot write into {folder} (permission denied); choose another place")


def write_file(path: Path, data: str | bytes) -> Path:
    """Write ``data`` whole (temp file beside it, then renamed) with :func:`file_mode`; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_figure(fig: Any, path: Path, dpi: int = 120) -> Path:
    """A matplotlib figure written whole to ``path`` (checked by :func:`output_file` or inside a run's folder)."""
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return write_file(path, buffer.getvalue())
