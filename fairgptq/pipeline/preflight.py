"""Checks that need the environment but not the model's weights, run by ``validate`` and before ``run`` loads.

Every one of these used to surface late: after the model loaded (a device name, a backend
parameter, a 300-character sweep value making a path too long), or after quantization (a
missing evaluation file, StereoSet overlapping the calibration pairs), losing the work.
They cost milliseconds to seconds: files are stat-ed, ``config.json`` and safetensors
headers are read (never the weights), pair sets are loaded for the overlap check.
Problems are (YAML path, message), like the other checks.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.errors import FairGPTQError
from ..registry import Registry
from .arguments import expand_path
from .inputs import evaluation_files
from .messages import Problem
from .schema import PipelineSpec


logger = logging.getLogger("fairgptq.pipeline")
LONGEST_SUFFIX = len(".partial-4194304") + 2  # a partial's name: "." + name + this
LONGEST_INSIDE = "model/tokenizer_config.json"  # the deepest file fairgptq writes in a run directory


def _model_config(spec: PipelineSpec, registry: Registry, problems: list[Problem]) -> dict | None:
    """config.json of a local model folder (None for aliases, hub ids and GGUF files)."""
    folder = expand_path(spec.model.name)
    if not folder.is_dir():
        return None
    if not (folder / "config.json").is_file():
        if len(list(folder.glob("*.gguf"))) != 1:
            problems.append(("model.name", f"{folder} holds neither a config.json (a Hugging Face model folder) nor "
                                           f"exactly one .gguf file; give the folder the model was saved in"))
        return None
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(("model.name", f"{folder / 'config.json'} is not readable JSON ({e}); the model folder "
                                       f"is damaged"))
        return None
    if not isinstance(config, dict) or not config.get("model_type"):
        problems.append(("model.name", f"{folder / 'config.json'} has no model_type; it is not a Hugging Face "
                                       f"model config"))
        return None
    known = registry.architectures()  # built-in families and those the pipeline's plugins add
    if config["model_type"] not in known:
        problems.append(("model.name", f"architecture {config['model_type']!r} is not supported; supported: "
                                       f"{', '.join(sorted(known))}"))
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                                "vocab.json")):
        problems.append(("model.name", f"{folder} has no tokenizer files (tokenizer.json / tokenizer_config.json)"))
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("pytorch_model*.bin")):
        problems.append(("model.name", f"{folder} has a config.json but no weights (*.safetensors or "
                                       f"pytorch_model*.bin); the model folder is incomplete"))
    problems += [("model.name", f"{w}: {why}") for w in weights if (why := _safetensors_damage(w)) is not None]
    return config


def shape_problems(pipeline: "Pipeline") -> list[Problem]:
    """Every local model folder's tensors against its config.json (``fairgptq validate`` only).

    Building the model on the meta device needs transformers' modeling code, seconds of imports that
    ``run`` would pay before it takes its lock; ``run`` finds the same mismatch when it loads the model
    (:func:`~fairgptq.model_loading.load_model` names it the same way)."""
    from ..model_loading import folder_shape_problem
    names = {pipeline.spec.model.name, *((p.raw.get("model") or {}).get("name") for p in pipeline.points)}
    problems: list[Problem] = []
    for name in sorted(n for n in names if isinstance(n, str)):
        try:
            folder = expand_path(name)
            local = folder.is_dir() and (folder / "config.json").is_file()
        except (OSError, ValueError):  # a name no file system holds: the path checks said so already
            continue
        if local and (why := folder_shape_problem(folder)):
            problems.append(("model.name", why))
    return problems


def _safetensors_damage(path: Path) -> str | None:
    """Why a safetensors file is truncated or not safetensors at all (reads the header only)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size, 100 * 2**20):
                return "not a safetensors file (bad header length)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError) as e:
        return f"not a readable safetensors file ({type(e).__name__})"
    if 8 + n + end != size:
        return f"truncated or padded: the header describes {8 + n + end} bytes, the file has {size}"
    return None


def _depth(config: dict) -> int | None:
    return next((config[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if isinstance(config.get(k), int)),
                None)


def _layer_problems(spec: PipelineSpec, registry: Registry, n_layers: int, problems: list[Problem]) -> None:
    """Layer indices the model does not have, as each objective's own settings model finds them."""
    from .objective_settings import settings_of
    for i, obj in enumerate(spec.objectives):
        settings = settings_of(registry, obj.name, obj.params)
        if settings is not None:
            problems += [(f"objectives[{i}].params.{key}", message)
                         for key, message in settings.depth_problems(n_layers)]


def _needs_absent_gpu(spec: PipelineSpec) -> bool:
    try:
        device = torch.device(spec.model.device).type
    except (RuntimeError, ValueError):
        device = "cpu"
    return ((spec.backend.name == "cuda" or device == "cuda") and not torch.cuda.is_available()) or \
        (device == "mps" and not torch.backends.mps.is_available())


def _device_problems(spec: PipelineSpec, problems: list[Problem]) -> None:
    try:
        device = torch.device(spec.model.device)
    except (RuntimeError, ValueError):
        problems.append(("model.device", f"not a device name: {spec.model.device!r} (use cpu, cuda, cuda:0, mps)"))
        return
    if device.type == "cuda" and not torch.cuda.is_available():
        problems.append(("model.device", "cuda: no CUDA GPU is available on this machine (use device: cpu)"))
    elif device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        problems.append(("model.device", f"{spec.model.device}: this machine has {torch.cuda.device_count()} GPU(s)"))
    elif device.type == "mps" and not torch.backends.mps.is_available():
        problems.append(("model.device", "mps: Apple's GPU backend is not available on this machine"))
    elif device.type not in ("cpu", "cuda", "mps"):
        problems.append(("model.device", f"device type {device.type!r} is not supported (use cpu, cuda or mps)"))


def _backend_problems(spec: PipelineSpec, registry: Registry, problems: list[Problem]) -> None:
    """Build the backend once: it checks its parameters (and, for cuda, the GPU) in its constructor."""
    try:
        from .build import backend
        backend(spec, registry)
    except FairGPTQError as e:
        problems.append(("backend", str(e)))


def _evaluation_problems(spec: PipelineSpec, problems: list[Problem]) -> None:
    """Every evaluation data file exists and reads as its task will read it (items > 0), before any model loads."""
    from ..evaluation.task_registry import registered_tasks
    tasks = registered_tasks()
    for task, path in evaluation_files(spec).items():
        key = f"evaluation.paths.{task}" if task in spec.evaluation.paths else f"evaluation.tasks[{task!r}]"
        if path is None:
            problems.append((key, f"task {task!r} has no local default file; give evaluation.paths.{task}"))
        elif not path.exists():  # a file, or the folder of a multi-file set (RedditBias, CHBias)
            if task in spec.evaluation.paths:
                problems.append((key, f"{task} data not found: {path}; give evaluation.paths.{task} an existing file"))
            else:
                from ..datasets_adapters.data_location import missing_message
                problems.append((key, f"{task} data not found: {missing_message(tasks[task].data_file)} (or give "
                                      f"evaluation.paths.{task})"))
        elif tasks.get(task) is not None and tasks[task].read_data is not None:
            problem = data_problem(tasks[task].read_data, path, task)
            if problem:
                problems.append((key, problem))


#: data checks already made in this process, by reader and the file's state (path, mtime, size): a sweep's
#: points name the same files, and validating 130 points read each one 130 times (minutes); a changed file
#: has another state, so it is read again
_CHECKED: dict[tuple, Any] = {}


def _once_per_file_state(path: Path, key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered for ``key`` while ``path`` (a file) keeps its mtime and size; a folder (a
    multi-file set) or a missing path is computed every time."""
    try:
        st = path.stat()
    except OSError:
        return compute()
    if not path.is_file():
        return compute()
    full = (*key, str(path.resolve()), st.st_mtime_ns, st.st_size)
    if full not in _CHECKED:
        _CHECKED[full] = compute()
    return _CHECKED[full]


def data_problem(read, path: Path, what: str) -> str | None:
    """Why ``read(path)`` gives no usable items (None when it gives some): one line naming the file.

    Remembered per reader and file state (``_once_per_file_state``); ``read`` is keyed by its module and
    name (a ``functools.partial``'s arguments included), so pass a named function or a partial, never a lambda
    that closes over settings."""
    return _once_per_file_state(Path(path), ("data_problem", _reader_name(read), what),
                                lambda: _read_problem(read, Path(path), what))


def _reader_name(read) -> str:
    """A reader's identity for the memo: module and name, with the bound arguments of a ``functools.partial``."""
    if isinstance(read, partial):
        return f"{_reader_name(read.func)}{read.args!r}{sorted(read.keywords.items())!r}"
    return f"{getattr(read, '__module__', '?')}:{getattr(read, '__qualname__', repr(read))}"


def _read_problem(read, path: Path, what: str) -> str | None:
    try:
        items = read(path)
    except UnicodeDecodeError as e:
        return f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
    except IsADirectoryError:
        return f"{path} is a folder; {what} reads one file: give the file's path"
    except (FairGPTQError, OSError, ValueError, KeyError) as e:
        if path.is_dir():  # a reader of one file may say "not found" of a folder; the cause is the folder
            return f"{path} is a folder; {what} reads one file: give the file's path"
        return f"{path}: {what} cannot read it ({type(e).__name__}: {str(e).strip()[:300]})"
    if not len(items):
        return f"{path}: {what} found no items in it (empty, or only a header); give a file with data"
    return None


def _pair_problems(spec: PipelineSpec, registry: Registry, problems: list[Problem]) -> None:
    """Read every pair set (as the run will), then check StereoSet overlap with the ones objectives use.

    StereoSet scored on sentences the model was calibrated on measures the fit, not debiasing.
    """
    from .build import pair_sets
    try:
        sets = pair_sets(spec, registry)
    except FairGPTQError as e:
        problems.append(("calibration.pairs", str(e)))
        return
    path = evaluation_files(spec).get("stereoset")
    used = {name for o in spec.objectives for name in o.pair_set_names()}
    if path is None or not path.is_file() or not used:
        return
    from ..datasets_adapters.stereoset import load_stereoset
    from ..datasets_adapters.splits import find_overlap, split_items
    try:
        options = spec.evaluation.options()
        items = _once_per_file_state(path, ("stereoset_split", options["stereoset_split"],
                                            options["holdout_fraction"], options.get("stereoset_split_by", "item")),
                                     lambda: split_items(load_stereoset(path, kind="intrasentence"),
                                                         options["stereoset_split"], options["holdout_fraction"],
                                                         options.get("stereoset_split_by", "item")))
    except FairGPTQError as e:
        problems.append(("evaluation.paths.stereoset", str(e)))
        return
    for name in sorted(used):
        hits = find_overlap(items, sets[name].pairs)
        if hits:
            problems.append((f"calibration.pairs.{name}", f"{len(hits)} of its pairs are among the StereoSet items "
                             f"evaluation scores (e.g. {hits[:2]}), which would measure the calibration fit, not "
                             f"debiasing. Set calibration.pairs.{name}.split: calibration and "
                             f"evaluation.stereoset_split: holdout (same holdout_fraction and split_by)"))


def _pairs_used(spec: PipelineSpec, registry: Registry | None) -> dict[str, int]:
    """How many pairs each pair set whose inputs are held layer by layer will hold (sets of objectives that say they
    hold pair activations): the source's count where it can be read (``n: 1e9`` of a file of 8 pairs uses 8), else
    the requested ``n`` capped at 10 000 (a pair set larger than that is checked as that)."""
    from .build import load_pair_set
    from .objective_settings import holds_pair_activations, registry_for
    answering = registry if registry is not None else registry_for(spec.plugins)
    held = {name for o in spec.objectives if o.pairs
            and holds_pair_activations(answering, o.name, o.params)
            for name in ([o.pairs] if isinstance(o.pairs, str) else o.pairs)}
    used = {}
    for name, ps in spec.calibration.pairs.items():
        if name not in held:  # scored by whole-model passes, or no objective's: never held layer by layer
            continue
        try:
            used[name] = load_pair_set(ps, registry).info["n"] if registry is not None else min(ps.n or 0, 10_000)
        except FairGPTQError:  # an unreadable source is reported by the pair checks
            used[name] = min(ps.n or 0, 10_000)
    return used


def memory_problems(spec: PipelineSpec, *, against: str = "total", registry: Registry | None = None) -> list[Problem]:
    """The in-memory run's need (weights + calibration activations, :mod:`.memory_check`) against the machine.

    ``against="total"`` (validate): refused only beyond the physical memory, warned beyond what is free now;
    ``"available"`` (the start of ``run``): refused beyond what is free now.  Skipped for models whose
    shape is unknown before loading (hub ids) and for ``model.onload: always`` (activations spill to disk).
    """
    from .memory_check import calibration_bytes, shape_of
    import psutil
    if spec.model.onload == "always":
        return []
    shape = shape_of(spec.model.name)
    if shape is None:
        return []
    text = spec.calibration.text
    tokens = (text.n * text.seqlen if text is not None else 0) + sum(
        2 * n * spec.calibration.max_length for n in _pairs_used(spec, registry).values())
    dtype_bytes = 2 if spec.model.dtype in ("float16", "bfloat16") else 4
    weights, activations = shape.weight_bytes(dtype_bytes), calibration_bytes(shape, tokens)
    need = weights + activations
    memory = psutil.virtual_memory()
    gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
    detail = (f"about {gib(need)} ({gib(weights)} of weights, {gib(activations)} for {tokens} calibration tokens "
              f"held layer by layer)")
    fix = "lower calibration.text.n or seqlen, or set model.onload: always (activations spill to disk)"
    limit = memory.total if against == "total" else memory.available
    if need > limit:
        where = "this machine has" if against == "total" else "this machine has free now"
        return [("calibration.text" if text is not None else "model.name",
                 f"the run needs {detail}; {where} {gib(limit)}. Fix: {fix}")]
    if against == "total" and need > memory.available:
        logger.warning("the run needs %s; %s is free now: it will be refused at run time unless memory frees up "
                       "(%s)", detail, gib(memory.available), fix)
    return []


def hardware_problems(spec: PipelineSpec, registry: Registry) -> list[Problem]:
    """The device and the backend, built once (its constructor checks its parameters and its hardware)."""
    problems: list[Problem] = []
    _device_problems(spec, problems)
    if not problems:
        _backend_problems(spec, registry, problems)
    return problems


def environment_problems(spec: PipelineSpec, registry: Registry) -> list[Problem]:
    """Everything checkable before the model loads, beyond the plugin and file checks in checks.py.

    A pipeline written for a GPU validates on a machine without one (with a warning): the
    device and a GPU backend are checked where it runs, at the start of ``run``.
    """
    problems: list[Problem] = []
    if _needs_absent_gpu(spec):
        logger.warning("%s needs a GPU this machine lacks (model.device %s, backend %s); validated without it",
                       spec.name, spec.model.device, spec.backend.name)
    else:
        problems += hardware_problems(spec, registry)
    config = _model_config(spec, registry, problems)
    n_layers = _depth(config) if config else None
    if n_layers:
        _layer_problems(spec, registry, n_layers, problems)
    problems += memory_problems(spec, registry=registry)
    _evaluation_problems(spec, problems)
    if not problems:
        _pair_problems(spec, registry, problems)
    target = Path(spec.output or Path("runs") / spec.name)
    problems += output_problems(target, []) or _target_problems(target)
    return problems


def _name_max(existing: Path) -> int:
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _target_problems(target: Path) -> list[Problem]:
    """What every run would refuse about its output folder, whatever --force says (validate's view)."""
    from .rundir import RunDirError, check_target
    try:
        check_target(target, force=True)
    except RunDirError as e:
        return [("output", str(e))]
    return []


def name_problems(target: Path) -> list[Problem]:
    """A name that is not UTF-8 (the run's records could not name it), or a path component longer than the file
    system allows (any check of the path would fail with an OSError)."""
    try:
        str(target).encode("utf-8")
    except UnicodeEncodeError:
        return [("output", f"{ascii(str(target))[:80]}: the name is not valid UTF-8, so the run's records cannot name "
                           f"it; choose a plain name")]
    name_limit = _name_max(Path("/"))
    too_long = next((part for part in target.absolute().parts if len(part.encode()) > name_limit), None)
    if too_long is None:
        return []
    return [("output", f"{str(target)[:80]}…: a folder name of {len(too_long)} characters is too long for this file "
                       f"system (at most {name_limit}); choose a shorter --out")]


def output_problems(target: Path, point_names: list[str]) -> list[Problem]:
    """Can every directory and file of this run be created under ``target``?"""
    problems: list[Problem] = name_problems(target)
    if problems:
        return problems
    existing = target.absolute()
    while not existing.exists():
        existing = existing.parent
    if existing != target.absolute() and not existing.is_dir():
        return [("output", f"cannot create {target}: {existing} is a file, not a folder")]
    if target.exists() and not target.is_dir():
        return [("output", f"{target} exists and is a file; choose another --out")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [("output", f"cannot write into {existing} (permission denied); choose another --out")]
    name_max = _name_max(existing)
    dirs = [target] + [target / "points" / n for n in point_names]
    for d in dirs:
        longest = max(len(part) for part in d.absolute().parts)
        if len(d.name) + LONGEST_SUFFIX > name_max or longest > name_max:
            where = f"sweep point {d.name[:40]}…" if d != target else str(target)[:80]
            problems.append(("output", f"{where}: a folder name of {len(d.name)} characters is too long for this "
                                       f"file system (at most {name_max - LONGEST_SUFFIX}); shorten the sweep values "
                                       f"or the output name"))
            break
        if len(str(d.absolute() / LONGEST_INSIDE)) + LONGEST_SUFFIX > 4000:
            problems.append(("output", f"{str(d)[:80]}…: the path is too long for this file system"))
            break
    return problems
