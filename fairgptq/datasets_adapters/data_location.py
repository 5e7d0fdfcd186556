"""Where the benchmark and calibration data come from, for a checkout and for an installed package alike.

Each data file is named by its path relative to a data folder (``wikitext2/valid.txt``,
``crows_pairs/crows_pairs_anonymized.csv``) and looked up in three places, in order:

1. ``$FAIRGPTQ_DATA_DIR`` (a shared copy; scripts/test.sh and scripts/demo.sh point it at
   ../shared/data when that folder exists);
2. the user cache folder, ``$XDG_CACHE_HOME/fairgptq/data`` (default ``~/.cache/fairgptq/data``),
   which ``fairgptq data fetch`` fills;
3. the dataset hub, through ``datasets``, for the files that have a hub copy (:data:`HUB_COPIES`):
   fetched once into the cache, then read from there.

An installed wheel has no checkout beside it, so no location is relative to the source tree.  A
file found nowhere is one :class:`MissingDataError` naming all three places and the fix.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import DataError

DATA_DIR_ENV = "FAIRGPTQ_DATA_DIR"
OFFLINE_ENVS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


class MissingDataError(DataError):
    """A data file that is in none of the three locations; ``relative`` names it."""

    def __init__(self, relative: str, message: str) -> None:
        super().__init__(message)
        self.relative = relative


def cache_dir() -> Path:
    """The user cache folder for data: ``$XDG_CACHE_HOME/fairgptq/data``, default ``~/.cache/fairgptq/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fairgptq" / "data"


def env_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """The first local data folder: ``$FAIRGPTQ_DATA_DIR`` when set, else the user cache folder.

    For reading a file use :func:`data_path` (or :func:`locate`), which also looks in the cache and the hub.
    """
    return env_dir() or cache_dir()


# --- the dataset hub -------------------------------------------------------------------------------------

def _write_lines(rows: Any, target: Path) -> None:
    """WikiText rows are the original file's lines, each with its newline: joined, they are the file."""
    target.write_text("".join(r["text"] for r in rows), encoding="utf-8")


_STEREOSET_LABELS = {0: "anti-stereotype", 1: "stereotype", 2: "unrelated"}


def _write_stereoset(parts: dict[str, Any], target: Path) -> None:
    """McGill-NLP/stereoset's nested rows as the flat jsonl the loader reads (one item a line, gold labels resolved)."""
    with target.open("w", encoding="utf-8") as f:
        for kind, rows in parts.items():
            for row in rows:
                item = {"type": kind, "target": row["target"], "bias_type": row["bias_type"], "context": row["context"]}
                for sentence, label in zip(row["sentences"]["sentence"], row["sentences"]["gold_label"]):
                    item[_STEREOSET_LABELS[int(label)]] = sentence
                f.write(json.dumps(item, ensure_ascii=False) + "\n")


def _write_crows_pairs(rows: Any, target: Path) -> None:
    """nyu-mll/crows_pairs with its class labels written back as the CSV's words (stereo / antistereo, bias types)."""
    features = rows.features

    def word(column: str, value: Any) -> Any:
        names = getattr(features[column], "int2str", None)
        return names(value) if names is not None and isinstance(value, int) else value

    with target.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"])
        for i, row in enumerate(rows):
            out.writerow([i, row["sent_more"], row["sent_less"], word("stereo_antistereo", row["stereo_antistereo"]),
                          word("bias_type", row["bias_type"])])


@dataclass(frozen=True)
class HubCopy:
    """A data file that can be rebuilt from a dataset on the hub: which dataset, and how it is written."""

    dataset: str
    configs: tuple[str | None, ...]
    split: str
    write: Callable[[Any, Path], None]

    def fetch(self, target: Path) -> None:
        from datasets import load_dataset
        if len(self.configs) == 1:
            data = load_dataset(self.dataset, self.configs[0], split=self.split)
        else:
            data = {c: load_dataset(self.dataset, c, split=self.split) for c in self.configs}
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            self.write(data, partial)
            partial.replace(target)  # complete or absent, never half a file
        finally:
            partial.unlink(missing_ok=True)


#: The data files with a hub copy.  The others (multilingual CrowS-Pairs, CHBias, RedditBias,
#: HolisticBias, StereoSet-PTBR, the zero-shot JSONL copies) exist on the hub only in other layouts:
#: put them in $FAIRGPTQ_DATA_DIR or the cache folder yourself.
HUB_COPIES: dict[str, HubCopy] = {
    "wikitext2/test.txt": HubCopy("Salesforce/wikitext", ("wikitext-2-v1",), "test", _write_lines),
    "wikitext2/valid.txt": HubCopy("Salesforce/wikitext", ("wikitext-2-v1",), "validation", _write_lines),
    "stereoset/stereoset_dev_flat.jsonl": HubCopy("McGill-NLP/stereoset", ("intrasentence", "intersentence"),
                                                  "validation", _write_stereoset),
    "crows_pairs/crows_pairs_anonymized.csv": HubCopy("nyu-mll/crows_pairs", (None,), "test", _write_crows_pairs),
}

_hub_failures: dict[str, str] = {}  # one try per file and process: a failed fetch is not retried on every lookup


def offline() -> str | None:
    """The variable that keeps ``datasets`` off the network, when one is set."""
    return next((f"{v}=1" for v in OFFLINE_ENVS if os.environ.get(v, "").lower() in ("1", "true", "yes")), None)


def fetch(relative: str) -> Path:
    """Fetch one file's hub copy into the cache folder; a DataError (one line) says why it could not."""
    copy = HUB_COPIES.get(relative)
    if copy is None:
        raise DataError(f"{relative} has no hub copy in this layout")
    target = cache_dir() / relative
    if target.exists():
        return target
    if offline():
        raise DataError(f"{relative}: the dataset hub is switched off ({offline()})")
    try:
        copy.fetch(target)
    except Exception as e:  # no network, no such dataset, a changed layout: one line, the cause named
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise DataError(f"{relative}: fetching {copy.dataset} from the dataset hub failed "
                        f"({type(e).__name__}: {reason})") from None
    return target


def missing_message(relative: str) -> str:
    """One line: the file, the three places looked in (and why the hub did not give it), and the fix."""
    env = env_dir()
    local = (f"data file {relative} not found: not in ${DATA_DIR_ENV} ({env if env else 'not set'}), not in the "
             f"user cache {cache_dir()}")
    copy = HUB_COPIES.get(relative)
    if copy is None:
        return (f"{local}, and the dataset hub has no copy of it in this layout; set {DATA_DIR_ENV} to a folder "
                f"holding {relative}, or copy it into the cache folder")
    why = _hub_failures.get(relative) or (f"switched off by {offline()}" if offline() else "not tried")
    return (f"{local}, and not from the dataset hub ({copy.dataset}: {why.removeprefix(relative + ': ')}); set "
            f"{DATA_DIR_ENV} to a folder holding {relative}, or run `fairgptq data fetch` where the hub is reachable")


def found_in(relative: str) -> tuple[str, Path] | None:
    """(which location, the path) of a local copy of ``relative``, without touching the hub."""
    for where, root in ((DATA_DIR_ENV, env_dir()), ("user cache", cache_dir())):
        if root is not None and (root / relative).exists():
            return where, root / relative
    return None


def locate(relative: str) -> Path | None:
    """The path of ``relative`` in the first location that has it, fetching a hub copy if need be; None if none."""
    local = found_in(relative)
    if local is not None:
        return local[1]
    if relative in HUB_COPIES and relative not in _hub_failures:
        try:
            return fetch(relative)
        except DataError as e:
            _hub_failures[relative] = str(e)
    return None


def data_path(relative: str) -> Path:
    """The path of ``relative`` (see :func:`locate`), or a :class:`MissingDataError` naming the three locations."""
    path = locate(relative)
    if path is None:
        raise MissingDataError(relative, missing_message(relative))
    return path


def expected_path(relative: str) -> Path:
    """Where ``relative`` is, or (missing everywhere) where a user would put it: for fingerprints and messages."""
    return locate(relative) or data_dir() / relative
